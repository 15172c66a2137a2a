//! The etcd scope's URL: `etcd://[user:password@]host1:2379,host2:2379/prefix?ttl=10s`,
//! or `etcds://…` for TLS (with `?ca=FILE` for a CA of one's own).

use std::time::Duration;

use latchkey_model::{percent_decode as decode, Error, ErrorKind, Result};

/// Where the etcd scope keeps its keys, and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The cluster's endpoints, `host:port` (2379 when no port is given).
    pub endpoints: Vec<String>,
    /// The key prefix of the scope's names (no trailing `/`; empty for the root).
    pub prefix: String,
    /// The session's lease time to live, in whole seconds as etcd counts it.
    pub ttl: Duration,
    /// User and password, if given.
    pub credentials: Option<(String, String)>,
    /// Whether to connect with TLS, and the CA file to trust, if not the system's.
    pub tls: Option<Option<String>>,
}

/// The session lease's time to live when the URL gives none.
pub const DEFAULT_TTL: Duration = Duration::from_secs(10);

impl Config {
    /// Parses an `etcd://` or `etcds://` URL; errors are `InvalidScope` and quote it.
    pub fn parse(url: &str) -> Result<Config> {
        let invalid = |why: String| {
            let url = latchkey_model::redact_url(url);
            Error::new(ErrorKind::InvalidScope, format!("etcd URL {url:?} {why}")).with_scope(url)
        };
        let (tls, rest) = match url.split_once("://") {
            Some(("etcd", rest)) => (false, rest),
            Some(("etcds", rest)) => (true, rest),
            _ => return Err(invalid("does not start with etcd:// or etcds://".into())),
        };
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (credentials, hosts) = match authority.rsplit_once('@') {
            Some((user_info, hosts)) => {
                let (user, password) = user_info.split_once(':').unwrap_or((user_info, ""));
                (Some((decode(user), decode(password))), hosts)
            }
            None => (None, authority),
        };
        let mut endpoints = Vec::new();
        for host in hosts.split(',') {
            if host.is_empty() {
                return Err(invalid("names an empty host".into()));
            }
            let with_port = match host.rsplit_once(':') {
                Some((_, port)) if !host.ends_with(']') => {
                    port.parse::<u16>().map_err(|_| invalid(format!("has a bad port in {host:?}")))?;
                    host.to_string()
                }
                _ => format!("{host}:2379"),
            };
            endpoints.push(with_port);
        }
        let prefix = path.trim_end_matches('/').to_string();
        let (mut ttl, mut ca) = (DEFAULT_TTL, None);
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "ttl" => ttl = parse_ttl(value).map_err(invalid)?,
                "ca" if tls => ca = Some(decode(value)),
                "ca" => return Err(invalid("gives ca= without TLS: use etcds://".into())),
                other => return Err(invalid(format!("has an unknown parameter {other:?} (known: ttl, ca)"))),
            }
        }
        Ok(Config { endpoints, prefix, ttl, credentials, tls: tls.then_some(ca) })
    }
}

impl Config {
    /// The configuration with what the URL leaves out taken from the environment:
    /// `LATCHKEY_ETCD_USER` and `LATCHKEY_ETCD_PASSWORD` when the URL has no credentials,
    /// `LATCHKEY_ETCD_CA` (a PEM file) for an `etcds://` URL without `ca=`.
    pub fn with_environment(mut self) -> Config {
        if let Some(None) = self.tls {
            if let Ok(ca) = std::env::var("LATCHKEY_ETCD_CA") {
                self.tls = Some(Some(ca));
            }
        }
        if self.credentials.is_none() {
            if let Ok(user) = std::env::var("LATCHKEY_ETCD_USER") {
                let password = std::env::var("LATCHKEY_ETCD_PASSWORD").unwrap_or_default();
                self.credentials = Some((user, password));
            }
        }
        self
    }
}

/// A TTL: whole seconds, `10s`, `1m`, or a bare number of seconds; at least 2 s (etcd's
/// minimum lease time is about its election timeout).
fn parse_ttl(text: &str) -> std::result::Result<Duration, String> {
    let seconds = match text.strip_suffix('m') {
        Some(minutes) => minutes.parse::<u64>().ok().map(|m| m * 60),
        None => text.strip_suffix('s').unwrap_or(text).parse::<u64>().ok(),
    };
    match seconds {
        Some(s) if s >= 2 => Ok(Duration::from_secs(s)),
        Some(_) => Err(format!("has ttl={text}: etcd leases need at least 2 s")),
        None => Err(format!("has ttl={text}: expected whole seconds, e.g. ttl=10s or ttl=1m")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_endpoints_prefix_ttl_and_credentials() {
        let config = Config::parse("etcd://alice:p%40ss@h1:2379,h2,h3:2380/locks/app/?ttl=15s").unwrap();
        assert_eq!(config.endpoints, ["h1:2379", "h2:2379", "h3:2380"]);
        assert_eq!(config.prefix, "locks/app");
        assert_eq!(config.ttl, Duration::from_secs(15));
        assert_eq!(config.credentials, Some(("alice".to_string(), "p@ss".to_string())));
        assert_eq!(config.tls, None);
        let config = Config::parse("etcds://127.0.0.1:2379?ca=/etc/ca.pem&ttl=1m").unwrap();
        assert_eq!((config.prefix.as_str(), config.ttl), ("", Duration::from_secs(60)));
        assert_eq!(config.tls, Some(Some("/etc/ca.pem".to_string())));
        assert_eq!(Config::parse("etcd://h").unwrap().ttl, DEFAULT_TTL);
    }

    #[test]
    fn rejects_bad_urls_saying_why() {
        for (bad, says) in [
            ("http://h:2379", "etcd://"),
            ("etcd://h:99999", "bad port"),
            ("etcd://h1,,h2", "empty host"),
            ("etcd://h?ttl=1s", "at least 2 s"),
            ("etcd://h?ttl=soon", "whole seconds"),
            ("etcd://h?ca=/x", "without TLS"),
            ("etcd://h?lease=3", "unknown parameter"),
        ] {
            let err = Config::parse(bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidScope, "{bad}");
            let text = err.to_string();
            assert!(text.contains(says) && text.contains(bad), "{bad}: {text}");
        }
    }
}
