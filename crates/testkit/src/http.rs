//! Just enough HTTP to talk to an etcd member's client port: `/health`, `/metrics`, and the
//! JSON gateway (`/v3/...`). HTTP/1.0, one connection per request, so that the answer ends
//! when the connection does.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

/// A `GET` or a `POST` of a JSON body to `127.0.0.1:port`; returns the status code and body.
/// `timeout` bounds the connection and each read and write.
pub(crate) fn request(port: u16, method: &str, path: &str, body: &str, timeout: Duration) -> io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&SocketAddr::from((Ipv4Addr::LOCALHOST, port)), timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let head = format!(
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    parse(&answer).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "malformed HTTP answer"))
}

/// Splits an answer into its status code and body (de-chunked if need be).
fn parse(answer: &[u8]) -> Option<(u16, String)> {
    let text = String::from_utf8_lossy(answer);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let chunked = head.lines().any(|line| {
        let line = line.to_ascii_lowercase();
        line.starts_with("transfer-encoding:") && line.contains("chunked")
    });
    Some((status, if chunked { dechunk(body)? } else { body.to_string() }))
}

/// The body of a `Transfer-Encoding: chunked` answer.
fn dechunk(mut rest: &str) -> Option<String> {
    let mut body = String::new();
    loop {
        let (size, after) = rest.split_once("\r\n")?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        if size == 0 {
            return Some(body);
        }
        body.push_str(after.get(..size)?);
        rest = after.get(size..)?.strip_prefix("\r\n")?;
    }
}

/// One sample of Prometheus's text format: `name{labels} value`.
pub(crate) struct Sample<'a> {
    pub(crate) name: &'a str,
    labels: &'a str,
    pub(crate) value: f64,
}

impl Sample<'_> {
    /// The value of label `key`, if the sample has it.
    pub(crate) fn label(&self, key: &str) -> Option<&str> {
        self.labels.split(',').find_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            (k.trim() == key).then(|| v.trim().trim_matches('"'))
        })
    }
}

/// The samples of a `/metrics` page (label values with `,` or `}` in them are not supported;
/// etcd's gRPC and server metrics have none).
pub(crate) fn samples(text: &str) -> impl Iterator<Item = Sample<'_>> {
    text.lines().filter(|line| !line.starts_with('#')).filter_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let value = value.parse().ok()?;
        let (name, labels) = match series.split_once('{') {
            Some((name, labels)) => (name, labels.strip_suffix('}')?),
            None => (series, ""),
        };
        Some(Sample { name, labels, value })
    })
}

/// The string value of the first `"key":"value"` or `"key":value` in a JSON text.
pub(crate) fn json_field<'a>(json: &'a str, key: &str) -> Option<&'a str> {
    let after = &json[json.find(&format!("\"{key}\":"))? + key.len() + 3..];
    let after = after.trim_start();
    match after.strip_prefix('"') {
        Some(quoted) => quoted.split('"').next(),
        None => after.split([',', '}']).next().map(str::trim),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_chunked_answers() {
        let plain = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nhello\r\nworld";
        assert_eq!(parse(plain), Some((200, "hello\r\nworld".into())));
        let chunked =
            b"HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
        assert_eq!(parse(chunked), Some((400, "hello world".into())));
        assert_eq!(parse(b"garbage"), None);
    }

    #[test]
    fn reads_samples_and_json_fields() {
        let text = "# HELP x\nplain 3\ngrpc{grpc_method=\"Put\",grpc_type=\"unary\"} 1e+06\n";
        let all: Vec<_> = samples(text).collect();
        assert_eq!(all.len(), 2);
        assert_eq!((all[0].name, all[0].value, all[0].label("grpc_type")), ("plain", 3.0, None));
        assert_eq!((all[1].name, all[1].value), ("grpc", 1e6));
        assert_eq!(all[1].label("grpc_method"), Some("Put"));
        let json = r#"{"header":{"member_id":"7","revision":"42"},"count": 5}"#;
        assert_eq!(json_field(json, "revision"), Some("42"));
        assert_eq!(json_field(json, "count"), Some("5"));
        assert_eq!(json_field(json, "missing"), None);
    }
}
