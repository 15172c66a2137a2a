//! What every lock of a PostgreSQL scope shares: the configuration, the scope's thread and
//! its session (made anew for new requests once the last one is lost).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use latchkey_model::{Error, ErrorKind, Result};
use latchkey_remote::Driver;

use crate::config::TlsMode;
use crate::session::Session;
use crate::Config;

/// The state of one scope, shared by its locks and guards.
pub(crate) struct Shared {
    pub url: String,
    pub config: Config,
    /// This machine's name, recorded in each request for `inspect`.
    pub host: String,
    pub driver: Arc<Driver>,
    tls: crate::tls::Connector,
    session: tokio::sync::Mutex<Option<Arc<Session>>>,
    closed: AtomicBool,
}

impl Shared {
    /// Connects and starts the first session. Runs on the scope's thread.
    pub async fn connect(url: String, mut config: Config, driver: Arc<Driver>) -> Result<Shared> {
        // libpq ignores sslmode on a Unix socket, where PostgreSQL has no TLS.
        let sockets_only =
            config.connection.get_hosts().iter().all(|h| matches!(h, tokio_postgres::config::Host::Unix(_)));
        config.connection.ssl_mode(match config.tls {
            _ if sockets_only => tokio_postgres::config::SslMode::Disable,
            TlsMode::Disable => tokio_postgres::config::SslMode::Disable,
            TlsMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            TlsMode::Require | TlsMode::VerifyCa | TlsMode::VerifyFull => tokio_postgres::config::SslMode::Require,
        });
        let tls = crate::tls::connector(&config).map_err(|e| e.with_scope(&url))?;
        let host =
            std::fs::read_to_string("/proc/sys/kernel/hostname").map_or_else(|_| "?".into(), |h| h.trim().into());
        let shared = Shared {
            url,
            config,
            host,
            driver,
            tls,
            session: tokio::sync::Mutex::new(None),
            closed: AtomicBool::new(false),
        };
        shared.session().await?;
        Ok(shared)
    }

    /// An error of this scope.
    pub fn error(&self, kind: ErrorKind, why: impl Into<String>, name: Option<&str>) -> Error {
        let error = Error::new(kind, why).with_scope(&self.url);
        match name {
            Some(name) => error.with_name(name),
            None => error,
        }
    }

    /// The live session, made anew if the last one was lost.
    pub async fn session(&self) -> Result<Arc<Session>> {
        let closed = || self.error(ErrorKind::Closed, "the scope was closed", None);
        if self.closed.load(Ordering::Acquire) {
            return Err(closed());
        }
        let mut current = self.session.lock().await;
        if self.closed.load(Ordering::Acquire) {
            return Err(closed());
        }
        if let Some(session) = current.as_ref().filter(|s| !s.is_lost()) {
            return Ok(session.clone());
        }
        let session = Session::start(&self.config, &self.tls).await.map_err(|e| e.with_scope(&self.url))?;
        *current = Some(session.clone());
        Ok(session)
    }

    /// Ends the session (its requests end with it) and refuses new work.
    pub async fn close(&self) {
        self.closed.store(true, Ordering::Release);
        if let Some(session) = self.session.lock().await.take() {
            session.mark_lost();
        }
    }

    /// The session, if one is live, without making one.
    pub fn current_session(&self) -> Option<Arc<Session>> {
        self.session.try_lock().ok().and_then(|s| s.clone())
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // The last lock and guard are gone: end the session now (closing its connection
        // ends it on the server), then stop the thread.
        if let Some(session) = self.current_session() {
            session.mark_lost();
        }
        self.driver.stop(None);
    }
}
