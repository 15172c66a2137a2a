//! What the scopes' URLs share: a password hidden for display, percent-decoding, and
//! durations such as `ttl=10s`.

use std::time::Duration;

/// `url` with the password of its user information hidden (`etcd://alice:***@db/x`), as
/// errors, logs and `inspect` show a scope's URL: a URL may carry credentials.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((user_info, hosts)) => {
            let user = user_info.split_once(':').map_or(user_info, |(user, _)| user);
            let hidden = if user_info.contains(':') { ":***" } else { "" };
            format!("{scheme}://{user}{hidden}@{hosts}{tail}")
        }
        None => url.to_string(),
    }
}

/// Percent-decodes a URL component (a user, a password, a file name); a `%` not followed by
/// two hex digits stays as it is.
pub fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(high), Some(low)) => {
                out.push((high * 16 + low) as u8);
                i += 3;
            }
            (byte, _, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A duration as scope URLs write it: `1500ms`, `10s`, `1m`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Option<Duration> {
    if let Some(ms) = text.strip_suffix("ms") {
        ms.parse::<u64>().ok().map(Duration::from_millis)
    } else if let Some(minutes) = text.strip_suffix('m') {
        minutes.parse::<u64>().ok().and_then(|m| m.checked_mul(60)).map(Duration::from_secs)
    } else {
        text.strip_suffix('s').unwrap_or(text).parse::<u64>().ok().map(Duration::from_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacted_urls_hide_passwords_only() {
        assert_eq!(redact_url("etcd://alice:s3cret@db:2379/x?ttl=2s"), "etcd://alice:***@db:2379/x?ttl=2s");
        assert_eq!(redact_url("etcd://alice@db/x"), "etcd://alice@db/x");
        assert_eq!(redact_url("etcd://db/x@y"), "etcd://db/x@y");
        assert_eq!(redact_url("host:/tmp/x"), "host:/tmp/x");
        assert_eq!(redact_url("etcd://a:p%40ss@h1,h2"), "etcd://a:***@h1,h2");
    }

    #[test]
    fn components_and_durations_are_read() {
        assert_eq!(percent_decode("p%40ss%2"), "p@ss%2");
        assert_eq!(parse_duration("1500ms"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("10s"), Some(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_duration("soon"), None);
    }
}
