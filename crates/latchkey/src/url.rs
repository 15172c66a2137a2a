//! Scope URLs: which scope a string like `process:` or `host:/run/x` names.

use std::path::PathBuf;

use latchkey_model::{Error, ErrorKind, Result};

/// A parsed scope URL.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ScopeUrl {
    /// `process:`: the threads and tasks of this process.
    Process,
    /// `host:` or `host:/dir`: every process of this machine that opens the same directory.
    Host(Option<PathBuf>),
    /// `etcd://...`, `postgres://...`, `redis://...`: a distributed scope on that engine.
    Distributed {
        /// The engine: `etcd`, `postgres` or `redis`.
        engine: &'static str,
        /// The whole URL.
        url: String,
    },
}

impl ScopeUrl {
    /// Parses `url`; an unknown or malformed one is an `InvalidScope` error that quotes it.
    pub fn parse(url: &str) -> Result<ScopeUrl> {
        let invalid = |why: &str| {
            let url = latchkey_model::redact_url(url);
            Error::new(ErrorKind::InvalidScope, format!("scope URL {url:?} {why}")).with_scope(url)
        };
        let Some((scheme, rest)) = url.split_once(':') else {
            return Err(invalid(
                "has no scheme: expected process:, host:, host:/dir, etcd://, postgres:// or redis://",
            ));
        };
        match scheme {
            "process" if rest.is_empty() || rest == "//" => Ok(ScopeUrl::Process),
            "process" => Err(invalid("takes nothing after `process:`")),
            "host" if rest.is_empty() => Ok(ScopeUrl::Host(None)),
            "host" if rest.starts_with('/') => Ok(ScopeUrl::Host(Some(PathBuf::from(rest)))),
            "host" => Err(invalid("needs an absolute directory after `host:`")),
            "etcd" | "etcds" | "postgres" | "postgresql" | "redis" | "rediss" => {
                // libpq takes `postgres://` with the server from PGHOST, or `postgres:///db`.
                let server_optional = scheme.starts_with("postgres");
                let has_server = rest.strip_prefix("//").is_some_and(|a| !a.is_empty() && !a.starts_with('/'));
                if !(has_server || server_optional && rest.starts_with("//")) {
                    return Err(invalid("needs a server after `//`"));
                }
                let engine = match scheme {
                    "etcd" | "etcds" => "etcd",
                    "redis" | "rediss" => "redis",
                    _ => "postgres",
                };
                Ok(ScopeUrl::Distributed { engine, url: url.to_string() })
            }
            _ => Err(invalid(&format!("has an unknown scheme {scheme:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_known_scopes() {
        assert_eq!(ScopeUrl::parse("process:").unwrap(), ScopeUrl::Process);
        assert_eq!(ScopeUrl::parse("host:").unwrap(), ScopeUrl::Host(None));
        assert_eq!(ScopeUrl::parse("host:/run/x").unwrap(), ScopeUrl::Host(Some("/run/x".into())));
        assert!(matches!(
            ScopeUrl::parse("etcd://10.0.0.1:2379/prefix").unwrap(),
            ScopeUrl::Distributed { engine: "etcd", .. }
        ));
        assert!(matches!(
            ScopeUrl::parse("postgres://u@db/app").unwrap(),
            ScopeUrl::Distributed { engine: "postgres", .. }
        ));
        assert!(matches!(
            ScopeUrl::parse("redis://cache:6379/0").unwrap(),
            ScopeUrl::Distributed { engine: "redis", .. }
        ));
    }

    #[test]
    fn rejects_malformed_urls_quoting_them() {
        for bad in ["", "process", "proc:", "process:x", "host:relative", "etcd:", "redis:///0", "http://x"] {
            let err = ScopeUrl::parse(bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidScope, "{bad:?}");
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
    }
}
