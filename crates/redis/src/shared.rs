//! What every lock of a Redis scope shares: the configuration, the scope's thread, the
//! connection (which reconnects by itself), the wake-ups, and the session (made anew for
//! new requests once the last one is lost).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use latchkey_model::{Error, ErrorKind, Result};
use latchkey_remote::Driver;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};

use crate::connection::{primaries, Connection};
use crate::direct::Direct;
use crate::notify::Notifications;
use crate::scripts::Scripts;
use crate::session::Session;
use crate::Config;

/// The state of one scope, shared by its locks and guards.
pub(crate) struct Shared {
    pub url: String,
    pub config: Config,
    /// This machine's name, recorded in each request for `inspect`.
    pub host: String,
    pub driver: Arc<Driver>,
    pub connection: Connection,
    pub scripts: Arc<Scripts>,
    pub notifications: Arc<Notifications>,
    /// The connections of blocking callers (their uncontended calls run on their thread);
    /// none on a cluster.
    pub direct: Option<Direct>,
    session: tokio::sync::Mutex<Option<Arc<Session>>>,
    closed: AtomicBool,
}

impl Shared {
    /// Connects and starts the first session. Runs on the scope's thread.
    pub async fn connect(url: String, config: Config, driver: Arc<Driver>) -> Result<Shared> {
        let unreachable = |e: redis::RedisError| {
            Error::new(ErrorKind::Unavailable, format!("cannot reach Redis at {}: {e}", config.address))
        };
        let client = config.client()?;
        let timeout = (config.ttl / 3).max(Duration::from_millis(500));
        let no_answer =
            |_| Error::new(ErrorKind::Unavailable, format!("cannot reach Redis at {}: no answer", config.address));
        let (connection, direct) = if config.cluster {
            let cluster = config.cluster_client(timeout)?;
            let mut connection = tokio::time::timeout(timeout * 2, cluster.get_async_connection())
                .await
                .map_err(no_answer)?
                .map_err(unreachable)?;
            // Every primary, not only the seed, must keep the scope's keys (review finding).
            let nodes: String =
                redis::cmd("CLUSTER").arg("NODES").query_async(&mut connection).await.map_err(unreachable)?;
            for (host, port) in primaries(&nodes) {
                let client = config.node_client(&host, port)?;
                let node = client.get_multiplexed_async_connection();
                let mut node =
                    tokio::time::timeout(timeout * 2, node).await.map_err(no_answer)?.map_err(unreachable)?;
                check_server(&mut node, &format!("{host}:{port}")).await?;
            }
            // Blocking calls take the scope's thread: its connection knows the slots.
            (Connection::Cluster(connection), None)
        } else {
            let manager = ConnectionManagerConfig::new()
                .set_connection_timeout(timeout)
                .set_response_timeout(timeout)
                .set_number_of_retries(2);
            let mut connection =
                tokio::time::timeout(timeout * 2, ConnectionManager::new_with_config(client.clone(), manager))
                    .await
                    .map_err(no_answer)?
                    .map_err(unreachable)?;
            check_server(&mut connection, &config.address).await?;
            (Connection::Single(connection), Some(Direct::new(client.clone(), timeout)))
        };
        let notifications = Notifications::start(client, timeout).await?;
        let host =
            std::fs::read_to_string("/proc/sys/kernel/hostname").map_or_else(|_| "?".into(), |h| h.trim().into());
        let shared = Shared {
            url,
            config,
            host,
            driver,
            connection,
            scripts: Arc::new(Scripts::new()),
            notifications,
            direct,
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
        let session = Session::new(self.connection.clone(), self.scripts.clone(), self.config.ttl)
            .map_err(|e| self.error(ErrorKind::Unavailable, format!("cannot make a session id: {e}"), None))?;
        *current = Some(session.clone());
        Ok(session)
    }

    /// The live session, if there is one and nobody is making a new one: for calls on the
    /// caller's thread, which cannot make one.
    pub fn current_session(&self) -> Option<Arc<Session>> {
        if self.closed.load(Ordering::Acquire) {
            return None;
        }
        self.session.try_lock().ok()?.clone().filter(|session| !session.is_lost())
    }

    /// Ends the session, gives back what it still has queued, and refuses new work.
    pub async fn close(&self) {
        self.closed.store(true, Ordering::Release);
        if let Some(session) = self.session.lock().await.take() {
            session.mark_lost();
            session.give_back().await;
        }
    }
}

/// Refuses a server the scope cannot keep its promises on: older than Redis 5 (scripts
/// that read `TIME`, then write, need the replication of effects), or one that may evict
/// keys (a lock's keys evicted would let two holders hold it). A server that does not let
/// its configuration be read (`CONFIG` renamed or denied, as on some managed services) is
/// taken as it is, with a warning.
async fn check_server(connection: &mut impl ConnectionLike, address: &str) -> Result<()> {
    let refuse = |why: String| Error::new(ErrorKind::Unsupported, format!("Redis at {address}: {why}"));
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(connection)
        .await
        .map_err(|e| Error::new(ErrorKind::Unavailable, format!("Redis INFO at {address} failed: {e}")))?;
    let version = info.lines().find_map(|line| line.strip_prefix("redis_version:")).unwrap_or("0").trim();
    let major: u32 = version.split('.').next().and_then(|m| m.parse().ok()).unwrap_or(0);
    if major < 5 {
        return Err(refuse(format!("version {version}; the scope needs Redis 5 or later")));
    }
    let settings: std::result::Result<Vec<String>, _> =
        redis::cmd("CONFIG").arg("GET").arg("maxmemory*").query_async(connection).await;
    match settings {
        Ok(settings) => {
            let setting = |name: &str| {
                settings
                    .chunks(2)
                    .find(|pair| pair[0] == name)
                    .and_then(|pair| pair.get(1))
                    .cloned()
                    .unwrap_or_default()
            };
            let (limit, policy) = (setting("maxmemory"), setting("maxmemory-policy"));
            if limit != "0" && !limit.is_empty() && policy != "noeviction" {
                return Err(refuse(format!(
                    "it may evict keys (maxmemory {limit}, maxmemory-policy {policy}): a lock's keys evicted would \
                     let two holders hold it; set maxmemory-policy noeviction (or maxmemory 0)"
                )));
            }
        }
        Err(e) => tracing::warn!(
            target: "latchkey",
            "cannot read the eviction policy of Redis at {address} ({e}): make sure it is noeviction"
        ),
    }
    Ok(())
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Some(session) = self.session.try_lock().ok().and_then(|s| s.clone()) {
            session.mark_lost();
        }
        self.driver.stop(None);
    }
}
