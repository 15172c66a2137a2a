//! The Redis scope's URL: `redis://[user:password@]host:6379/db?ttl=10s&prefix=lk`, or
//! `rediss://…` for TLS (with `?ca=FILE` for a CA of one's own).

use std::time::Duration;

use latchkey_model::{percent_decode as decode, Error, ErrorKind, Result};

/// Where the Redis scope keeps its keys, and how it connects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// `host:port` (6379 when no port is given).
    pub address: String,
    /// The database number (0 when the URL names none).
    pub db: u32,
    /// User (ACL, Redis 6+) and password, if given.
    pub credentials: Option<(Option<String>, String)>,
    /// The session's time to live: how long a holder cut off from the server keeps its
    /// locks; the keep-alive comes every third of it.
    pub ttl: Duration,
    /// The prefix of every key of the scope (`lk` by default).
    pub prefix: String,
    /// Whether to connect with TLS, and the CA file to trust, if not the system's.
    pub tls: Option<Option<String>>,
    /// Whether the server is a node of a Redis Cluster (`cluster=1`): the scope finds the
    /// others from it and sends each name's scripts to the node of its slot.
    pub cluster: bool,
}

impl Config {
    /// The client of the server, as the `redis` crate takes it: with TLS for `rediss://`,
    /// trusting the CA file `ca=` if given, else the system's CAs.
    pub fn client(&self) -> Result<redis::Client> {
        self.client_of(self.connection_info())
    }

    /// A client of node `host:port` of the cluster, with the URL's credentials and TLS.
    pub fn node_client(&self, host: &str, port: u16) -> Result<redis::Client> {
        let mut info = self.connection_info();
        info.addr = match info.addr {
            redis::ConnectionAddr::TcpTls { insecure, tls_params, .. } => {
                redis::ConnectionAddr::TcpTls { host: host.to_string(), port, insecure, tls_params }
            }
            _ => redis::ConnectionAddr::Tcp(host.to_string(), port),
        };
        self.client_of(info)
    }

    /// The cluster's client, seeded with the URL's node.
    pub fn cluster_client(&self, timeout: std::time::Duration) -> Result<redis::cluster::ClusterClient> {
        let mut builder = redis::cluster::ClusterClientBuilder::new(vec![self.connection_info()])
            .connection_timeout(timeout)
            .response_timeout(timeout)
            // Nothing is sent again by the client: see connection.rs.
            .retries(0);
        if let Some(ca) = self.tls.as_ref() {
            builder = builder.tls(redis::cluster::TlsMode::Secure);
            if let Some(ca) = ca {
                let pem = std::fs::read(ca)
                    .map_err(|e| Error::new(ErrorKind::InvalidScope, format!("cannot read the CA file {ca:?}: {e}")))?;
                builder = builder.certs(redis::TlsCertificates { client_tls: None, root_cert: Some(pem) });
            }
        }
        builder
            .build()
            .map_err(|e| Error::new(ErrorKind::InvalidScope, format!("Redis Cluster at {}: {e}", self.address)))
    }

    fn client_of(&self, info: redis::ConnectionInfo) -> Result<redis::Client> {
        let client = match &self.tls {
            Some(Some(ca)) => {
                let pem = std::fs::read(ca)
                    .map_err(|e| Error::new(ErrorKind::InvalidScope, format!("cannot read the CA file {ca:?}: {e}")))?;
                let certificates = redis::TlsCertificates { client_tls: None, root_cert: Some(pem) };
                redis::Client::build_with_tls(info, certificates)
            }
            _ => redis::Client::open(info),
        };
        client.map_err(|e| Error::new(ErrorKind::InvalidScope, format!("Redis at {}: {e}", self.address)))
    }

    fn connection_info(&self) -> redis::ConnectionInfo {
        let (host, port) = self.address.rsplit_once(':').expect("an address has a port");
        let port: u16 = port.parse().expect("checked when parsed");
        let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
        let (username, password) = match &self.credentials {
            Some((user, password)) => (user.clone(), Some(password.clone())),
            None => (None, None),
        };
        let redis = redis::RedisConnectionInfo { db: i64::from(self.db), username, password, ..Default::default() };
        let addr = match self.tls {
            Some(_) => redis::ConnectionAddr::TcpTls { host, port, insecure: false, tls_params: None },
            None => redis::ConnectionAddr::Tcp(host, port),
        };
        redis::ConnectionInfo { addr, redis }
    }
}

/// The session's time to live when the URL gives none.
pub const DEFAULT_TTL: Duration = Duration::from_secs(10);

impl Config {
    /// Parses a `redis://` or `rediss://` URL; errors are `InvalidScope` and quote it
    /// without its password.
    pub fn parse(url: &str) -> Result<Config> {
        let shown = latchkey_model::redact_url(url);
        let invalid =
            |why: String| Error::new(ErrorKind::InvalidScope, format!("Redis URL {shown:?} {why}")).with_scope(&shown);
        let (tls, rest) = match url.split_once("://") {
            Some(("redis", rest)) => (false, rest),
            Some(("rediss", rest)) => (true, rest),
            _ => return Err(invalid("does not start with redis:// or rediss://".into())),
        };
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (credentials, host) = match authority.rsplit_once('@') {
            Some((user_info, host)) => {
                let (user, password) = match user_info.split_once(':') {
                    Some((user, password)) => (Some(decode(user)).filter(|u| !u.is_empty()), decode(password)),
                    None => (None, decode(user_info)),
                };
                (Some((user, password)), host)
            }
            None => (None, authority),
        };
        if host.is_empty() {
            return Err(invalid("names no server".into()));
        }
        let address = match host.rsplit_once(':') {
            Some((_, port)) if !host.ends_with(']') => {
                port.parse::<u16>().map_err(|_| invalid(format!("has a bad port in {host:?}")))?;
                host.to_string()
            }
            _ => format!("{host}:6379"),
        };
        let db = match path.trim_end_matches('/') {
            "" => 0,
            db => db.parse::<u32>().map_err(|_| invalid(format!("names database {db:?}, not a number")))?,
        };
        let (mut ttl, mut prefix, mut ca, mut cluster) = (DEFAULT_TTL, "lk".to_string(), None, false);
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "ttl" => ttl = parse_ttl(value).map_err(invalid)?,
                "prefix" if !value.is_empty() && !value.contains(['{', '}']) => prefix = value.to_string(),
                "prefix" => return Err(invalid(format!("has prefix={value:?}: not empty, and no braces"))),
                "ca" if tls => ca = Some(decode(value)),
                "ca" => return Err(invalid("gives ca= without TLS: use rediss://".into())),
                "cluster" => {
                    cluster = match value {
                        "1" | "true" | "yes" | "on" => true,
                        "0" | "false" | "no" | "off" => false,
                        _ => return Err(invalid(format!("has cluster={value:?}: expected 1 or 0"))),
                    }
                }
                other => {
                    return Err(invalid(format!(
                        "has an unknown parameter {other:?} (known: ttl, prefix, ca, cluster)"
                    )))
                }
            }
        }
        if cluster && db != 0 {
            return Err(invalid(format!("names database {db} of a cluster: a Redis Cluster has database 0 only")));
        }
        Ok(Config { address, db, credentials, ttl, prefix, tls: tls.then_some(ca), cluster })
    }
}

/// A TTL (see `latchkey_model::parse_duration`), from 1 s to a day.
fn parse_ttl(text: &str) -> std::result::Result<Duration, String> {
    match latchkey_model::parse_duration(text) {
        Some(ttl) if (Duration::from_secs(1)..=Duration::from_secs(86_400)).contains(&ttl) => Ok(ttl),
        Some(_) => Err(format!("has ttl={text}: it must be from 1s to 1 day")),
        None => Err(format!("has ttl={text}: expected a time such as ttl=10s, ttl=1500ms or ttl=1m")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_address_db_credentials_and_parameters() {
        let config = Config::parse("redis://alice:p%40ss@cache:6380/2?ttl=1500ms&prefix=locks").unwrap();
        assert_eq!((config.address.as_str(), config.db), ("cache:6380", 2));
        assert_eq!(config.credentials, Some((Some("alice".into()), "p@ss".into())));
        assert_eq!(
            (config.ttl, config.prefix.as_str(), config.tls.clone()),
            (Duration::from_millis(1500), "locks", None)
        );
        let config = Config::parse("rediss://:secret@cache?ca=/etc/ca.pem").unwrap();
        assert_eq!((config.address.as_str(), config.db), ("cache:6379", 0));
        assert_eq!(config.credentials, Some((None, "secret".into())));
        assert_eq!(config.tls, Some(Some("/etc/ca.pem".into())));
        assert_eq!(Config::parse("redis://h").unwrap().ttl, DEFAULT_TTL);
    }

    #[test]
    fn rejects_bad_urls_saying_why_without_the_password() {
        for (bad, says) in [
            ("http://h", "redis://"),
            ("redis://", "no server"),
            ("redis://u:hunter2@h:99999", "bad port"),
            ("redis://h/zero", "not a number"),
            ("redis://h?ttl=0s", "from 1s"),
            ("redis://h?prefix={x}", "braces"),
            ("redis://h?ca=/x", "without TLS"),
            ("redis://u:hunter2@h?lease=3", "unknown parameter"),
        ] {
            let err = Config::parse(bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidScope, "{bad}");
            let text = err.to_string();
            assert!(text.contains(says), "{bad}: {text}");
            assert!(!text.contains("hunter2"), "the password shows: {text}");
        }
    }
}
