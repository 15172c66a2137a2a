//! The PostgreSQL scope's URL: `postgres://user:password@host:5432/dbname?ttl=10s&schema=latchkey`
//! (or `postgresql://`), with libpq's parameters (`sslmode`, `sslrootcert`,
//! `application_name`, `connect_timeout`, ...), and its `PG*` environment variables and
//! password file for what the URL leaves out.

use std::str::FromStr;
use std::time::Duration;

use latchkey_model::{Error, ErrorKind, Result};

/// Where the PostgreSQL scope keeps its locks, and how it connects.
#[derive(Clone, Debug)]
pub struct Config {
    /// The connection, as tokio-postgres takes it.
    pub connection: tokio_postgres::Config,
    /// The schema of the scope's tables and functions (made on first use).
    pub schema: String,
    /// How long the server keeps a silent session (`idle_session_timeout`), and so how
    /// long a holder cut off from the server keeps its locks; the keep-alive comes every
    /// third of it.
    pub ttl: Duration,
    /// Whether to use TLS: `sslmode` (`disable`, `prefer`, `require`, `verify-ca`,
    /// `verify-full`; libpq's default is `prefer`).
    pub tls: TlsMode,
    /// A PEM file of CAs to trust (`sslrootcert`; `system` for the system's CAs).
    pub root_cert: Option<String>,
    /// The home directory (`HOME`), where libpq's default files are.
    pub home: Option<String>,
}

/// When to use TLS, and what to check, as libpq's `sslmode` says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsMode {
    /// Never.
    Disable,
    /// If the server offers it, unchecked (libpq's default; `allow` is taken as this too).
    Prefer,
    /// Always; the certificate is checked against `sslrootcert` if one is given (as libpq
    /// does), else unchecked.
    Require,
    /// Always, with the certificate's chain checked.
    VerifyCa,
    /// Always, with the chain and the host name checked.
    VerifyFull,
}

/// The session's time to live when the URL gives none.
pub const DEFAULT_TTL: Duration = Duration::from_secs(10);
/// The schema when the URL names none.
pub const DEFAULT_SCHEMA: &str = "latchkey";

impl Config {
    /// Parses a `postgres://` or `postgresql://` URL; errors are `InvalidScope` and quote it
    /// (without its password). What it leaves out comes from the `PG*` variables.
    pub fn parse(url: &str) -> Result<Config> {
        Config::parse_with(url, |name| std::env::var(name).ok())
    }

    /// [`parse`](Config::parse) with the environment given as a function.
    pub fn parse_with(url: &str, env: impl Fn(&str) -> Option<String>) -> Result<Config> {
        let shown = latchkey_model::redact_url(url);
        let invalid = |why: String| {
            Error::new(ErrorKind::InvalidScope, format!("PostgreSQL URL {shown:?} {why}")).with_scope(&shown)
        };
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(invalid("does not start with postgres:// or postgresql://".into()));
        }
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let (mut ttl, mut schema, mut tls, mut root_cert) = (DEFAULT_TTL, DEFAULT_SCHEMA.to_string(), None, None);
        let mut passed = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "ttl" => ttl = parse_ttl(value).map_err(invalid)?,
                "schema" => schema = parse_schema(value).map_err(invalid)?,
                "sslmode" => tls = Some(parse_sslmode(value).map_err(invalid)?),
                "sslrootcert" => root_cert = Some(value.to_string()),
                "sslcert" | "sslkey" | "sslpassword" | "sslcrl" | "sslcrldir" => {
                    return Err(invalid(format!("has {key}=: client certificates and CRLs are not supported yet")))
                }
                _ => passed.push(pair),
            }
        }
        let rest = if passed.is_empty() { base.to_string() } else { format!("{base}?{}", passed.join("&")) };
        let mut connection =
            tokio_postgres::Config::from_str(&rest).map_err(|e| invalid(format!("is not a connection URL: {e}")))?;
        let tls = match tls {
            Some(tls) => tls,
            None => env("PGSSLMODE").map_or(Ok(TlsMode::Prefer), |m| parse_sslmode(&m)).map_err(invalid)?,
        };
        let root_cert = root_cert.or_else(|| env("PGSSLROOTCERT"));
        fill_from_environment(&mut connection, &env).map_err(invalid)?;
        Ok(Config { connection, schema, ttl, tls, root_cert, home: env("HOME") })
    }

    /// `host:port/dbname`, for people to read.
    pub fn describe(&self) -> String {
        let host = match self.connection.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
            Some(tokio_postgres::config::Host::Unix(path)) => path.display().to_string(),
            None => "?".into(),
        };
        let port = self.connection.get_ports().first().copied().unwrap_or(5432);
        format!("{host}:{port}/{}", self.connection.get_dbname().unwrap_or("?"))
    }
}

/// What libpq takes from the environment when the URL leaves it out.
fn fill_from_environment(
    connection: &mut tokio_postgres::Config,
    env: &impl Fn(&str) -> Option<String>,
) -> std::result::Result<(), String> {
    if connection.get_hosts().is_empty() {
        let host = env("PGHOST").unwrap_or_else(|| {
            // libpq's default on Debian: the server's socket directory, else the network.
            let socket = "/var/run/postgresql";
            if std::path::Path::new(socket).is_dir() {
                socket.into()
            } else {
                "localhost".into()
            }
        });
        for host in host.split(',') {
            if host.starts_with('/') {
                connection.host_path(host);
            } else {
                connection.host(host);
            }
        }
    }
    if connection.get_ports().is_empty() {
        if let Some(port) = env("PGPORT") {
            connection.port(port.parse().map_err(|_| format!("has PGPORT={port:?}, not a port"))?);
        }
    }
    if connection.get_user().is_none() {
        let user = env("PGUSER").or_else(|| env("USER")).unwrap_or_else(|| "postgres".into());
        connection.user(&user);
    }
    if connection.get_password().is_none() {
        if let Some(password) = env("PGPASSWORD") {
            connection.password(password);
        }
    }
    if connection.get_dbname().is_none() {
        let dbname = env("PGDATABASE").or_else(|| connection.get_user().map(str::to_string));
        if let Some(dbname) = dbname {
            connection.dbname(&dbname);
        }
    }
    if connection.get_application_name().is_none() {
        connection.application_name(env("PGAPPNAME").unwrap_or_else(|| "latchkey".into()));
    }
    if connection.get_connect_timeout().is_none() {
        let seconds = env("PGCONNECT_TIMEOUT").and_then(|s| s.parse::<u64>().ok()).unwrap_or(10);
        connection.connect_timeout(Duration::from_secs(seconds.max(1)));
    }
    if connection.get_options().is_none() {
        if let Some(options) = env("PGOPTIONS") {
            connection.options(&options);
        }
    }
    if connection.get_password().is_none() {
        let file = env("PGPASSFILE")
            .map(std::path::PathBuf::from)
            .or_else(|| env("HOME").map(|home| std::path::Path::new(&home).join(".pgpass")));
        let host = match connection.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
            // libpq looks up a socket connection as `localhost`.
            _ => "localhost".to_string(),
        };
        let port = connection.get_ports().first().copied().unwrap_or(5432);
        let (db, user) = (connection.get_dbname().unwrap_or(""), connection.get_user().unwrap_or(""));
        if let Some(password) = file.and_then(|file| crate::pgpass::lookup(&file, &host, port, db, user)) {
            connection.password(password);
        }
    }
    Ok(())
}

/// A TTL (see `latchkey_model::parse_duration`), from 1 s to a day.
fn parse_ttl(text: &str) -> std::result::Result<Duration, String> {
    match latchkey_model::parse_duration(text) {
        Some(ttl) if (Duration::from_secs(1)..=Duration::from_secs(86_400)).contains(&ttl) => Ok(ttl),
        Some(_) => Err(format!("has ttl={text}: it must be from 1s to 1 day")),
        None => Err(format!("has ttl={text}: expected a time such as ttl=10s, ttl=1500ms or ttl=1m")),
    }
}

/// A schema name latchkey can put in SQL as it is: letters, digits and `_`, at most 63 bytes.
fn parse_schema(text: &str) -> std::result::Result<String, String> {
    let simple = !text.is_empty()
        && text.len() <= 63
        && text.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && text.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if simple {
        Ok(text.to_string())
    } else {
        Err(format!("has schema={text:?}: a schema name here is lower-case letters, digits and _, at most 63"))
    }
}

fn parse_sslmode(text: &str) -> std::result::Result<TlsMode, String> {
    match text {
        "disable" => Ok(TlsMode::Disable),
        "allow" | "prefer" => Ok(TlsMode::Prefer),
        "require" => Ok(TlsMode::Require),
        "verify-ca" => Ok(TlsMode::VerifyCa),
        "verify-full" => Ok(TlsMode::VerifyFull),
        other => Err(format!("has sslmode={other:?} (known: disable, allow, prefer, require, verify-ca, verify-full)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn parses_the_url_and_latchkey_s_own_parameters() {
        let config = Config::parse_with(
            "postgresql://alice:p%40ss@db.example:6543/app?ttl=1500ms&schema=locks&sslmode=require&application_name=x",
            no_env,
        )
        .unwrap();
        assert_eq!(config.connection.get_user(), Some("alice"));
        assert_eq!(config.connection.get_password(), Some(&b"p@ss"[..]));
        assert_eq!(config.connection.get_dbname(), Some("app"));
        assert_eq!(config.connection.get_ports(), [6543]);
        assert_eq!(config.connection.get_application_name(), Some("x"));
        assert_eq!(
            (config.ttl, config.schema.as_str(), config.tls),
            (Duration::from_millis(1500), "locks", TlsMode::Require)
        );
        assert_eq!(config.describe(), "db.example:6543/app");
        let config = Config::parse_with("postgres://h/db", no_env).unwrap();
        assert_eq!((config.ttl, config.schema.as_str(), config.tls), (DEFAULT_TTL, "latchkey", TlsMode::Prefer));
    }

    #[test]
    fn takes_what_the_url_leaves_out_from_pg_variables() {
        let env = |name: &str| {
            let value = match name {
                "PGHOST" => "pg.internal",
                "PGPORT" => "5433",
                "PGUSER" => "bob",
                "PGPASSWORD" => "secret",
                "PGDATABASE" => "ops",
                "PGSSLMODE" => "disable",
                "PGAPPNAME" => "cron",
                _ => return None,
            };
            Some(value.to_string())
        };
        let config = Config::parse_with("postgres://", env).unwrap();
        assert_eq!(config.describe(), "pg.internal:5433/ops");
        assert_eq!(config.connection.get_user(), Some("bob"));
        assert_eq!(config.connection.get_password(), Some(&b"secret"[..]));
        assert_eq!(config.connection.get_application_name(), Some("cron"));
        assert_eq!(config.tls, TlsMode::Disable);
        // The URL wins over the environment.
        let config = Config::parse_with("postgres://carol@h:1/db?sslmode=prefer", env).unwrap();
        assert_eq!((config.describe().as_str(), config.connection.get_user()), ("h:1/db", Some("carol")));
        assert_eq!(config.tls, TlsMode::Prefer);
    }

    #[test]
    fn rejects_bad_urls_saying_why_without_the_password() {
        for (bad, says) in [
            ("mysql://h/db", "postgres://"),
            ("postgres://u:hunter2@h/db?ttl=0s", "from 1s"),
            ("postgres://h/db?ttl=soon", "ttl=10s"),
            ("postgres://h/db?schema=Bad-Name", "schema="),
            ("postgres://h/db?sslmode=maybe", "sslmode"),
            ("postgres://u:hunter2@h/db?lease=3", "not a connection URL"),
        ] {
            let err = Config::parse_with(bad, no_env).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidScope, "{bad}");
            let text = err.to_string();
            assert!(text.contains(says), "{bad}: {text}");
            assert!(!text.contains("hunter2"), "the password shows: {text}");
        }
    }
}
