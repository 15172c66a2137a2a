//! The Redis scope: names shared by every client of the same server (or cluster), database
//! and key prefix.

use std::sync::Arc;

use latchkey_model::{
    block_on_until, validate_name, BoxFuture, ErrorKind, Name, RawLock, RawScope, Result, State, RWLOCK_CAPACITY,
};
use latchkey_remote::Driver;

use crate::connection::{primaries, Connection};
use crate::keys;
use crate::lock::{inspect, RedisLock};
use crate::shared::Shared;
use crate::Config;

/// A scope on a Redis server: `redis://[user:password@]host:6379/db?ttl=10s`.
///
/// One session per scope carries every lock of the scope; when it lapses, every guard of
/// the scope reports `lost()`. Each step is one script on the server, on the server's
/// clock. The scope runs its own thread: its blocking API needs no runtime, its async API
/// works on any executor.
///
/// ```no_run
/// use latchkey_model::RawScope;
/// let scope = latchkey_redis::RedisScope::open("redis://127.0.0.1:6379/0?ttl=10s")?;
/// let lock = scope.open("db-migrations", 1)?;
/// # Ok::<(), latchkey_model::Error>(())
/// ```
pub struct RedisScope {
    shared: Arc<Shared>,
}

impl RedisScope {
    /// Connects to the server `url` names and starts the scope's session, blocking.
    pub fn open(url: &str) -> Result<RedisScope> {
        block_on_until(RedisScope::connect(url), None).expect("no deadline")
    }

    /// The async form of [`open`](RedisScope::open), on any executor.
    pub async fn connect(url: &str) -> Result<RedisScope> {
        let config = Config::parse(url)?;
        let url = latchkey_model::redact_url(url);
        let driver = Arc::new(Driver::start("Redis").map_err(|e| e.with_scope(&url))?);
        let thread = driver.clone();
        let shared = driver.run(Shared::connect(url.clone(), config, thread)).await.map_err(|e| e.with_scope(&url))?;
        Ok(RedisScope { shared: Arc::new(shared.map_err(|e| e.with_scope(&url))?) })
    }
}

impl std::fmt::Debug for RedisScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("RedisScope").field(&self.shared.url).finish()
    }
}

impl RawScope for RedisScope {
    fn url(&self) -> &str {
        &self.shared.url
    }

    fn open(&self, name: &str, capacity: u32) -> Result<Arc<dyn RawLock>> {
        let scoped = |e: latchkey_model::Error| e.with_name(name).with_scope(&self.shared.url);
        validate_name(name).map_err(scoped)?;
        if capacity == 0 || capacity > RWLOCK_CAPACITY {
            return Err(self.shared.error(
                ErrorKind::Unsupported,
                format!("a capacity of {capacity} permits"),
                Some(name),
            ));
        }
        Ok(Arc::new(RedisLock::new(self.shared.clone(), Name::new(name).map_err(scoped)?, capacity)))
    }

    fn inspect(&self, name: &str) -> Result<State> {
        block_on_until(self.inspect_async(name), None).expect("no deadline")
    }

    fn inspect_async<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<State>> {
        Box::pin(async move {
            let name = Name::new(name).map_err(|e| e.with_scope(&self.shared.url))?;
            let shared = self.shared.clone();
            self.shared.driver.run(async move { inspect(&shared, name).await }).await?
        })
    }

    fn list(&self) -> Result<Vec<State>> {
        block_on_until(self.list_async(), None).expect("no deadline")
    }

    fn list_async(&self) -> BoxFuture<'_, Result<Vec<State>>> {
        let shared = self.shared.clone();
        Box::pin(async move {
            let driver = shared.driver.clone();
            driver
                .run(async move {
                    shared.driver.wait_background().await;
                    let mut names = scan_names(&shared).await?;
                    names.sort();
                    names.dedup();
                    let mut states = Vec::new();
                    for name in names {
                        let Ok(name) = Name::new(&name) else { continue };
                        let state = inspect(&shared, name).await?;
                        if !state.holders.is_empty() || state.waiters > 0 {
                            states.push(state);
                        }
                    }
                    Ok(states)
                })
                .await?
        })
    }

    fn location(&self) -> Option<String> {
        let config = &self.shared.config;
        Some(format!("Redis {} database {} under {:?}", config.address, config.db, format!("{}:", config.prefix)))
    }

    fn close(&self) -> BoxFuture<'_, Result<()>> {
        let shared = self.shared.clone();
        Box::pin(async move {
            let driver = shared.driver.clone();
            driver
                .run(async move {
                    shared.driver.wait_background().await;
                    shared.close().await;
                })
                .await
        })
    }
}

/// The names with a queue key in the scope, from `SCAN` over the server, or over every
/// primary of a cluster.
async fn scan_names(shared: &Shared) -> Result<Vec<String>> {
    let failed = |what: &str, e: redis::RedisError| {
        shared.error(ErrorKind::Unavailable, format!("Redis {what} failed: {e}"), None)
    };
    let mut connections = Vec::new();
    match &shared.connection {
        Connection::Single(connection) => {
            let mut connection = connection.clone();
            return scan(&mut connection, shared).await;
        }
        Connection::Cluster(connection) => {
            let nodes: String = redis::cmd("CLUSTER")
                .arg("NODES")
                .query_async(&mut connection.clone())
                .await
                .map_err(|e| failed("CLUSTER NODES", e))?;
            for (host, port) in primaries(&nodes) {
                let client = shared.config.node_client(&host, port)?;
                let node = tokio::time::timeout(shared.config.ttl, client.get_multiplexed_async_connection())
                    .await
                    .map_err(|_| shared.error(ErrorKind::Unavailable, format!("no answer from {host}:{port}"), None))?
                    .map_err(|e| failed("a connection to a node", e))?;
                connections.push(node);
            }
        }
    }
    let mut names = Vec::new();
    for mut connection in connections {
        names.extend(scan(&mut connection, shared).await?);
    }
    Ok(names)
}

/// The names with a queue key in the scope on the server of `connection`.
async fn scan(connection: &mut impl redis::aio::ConnectionLike, shared: &Shared) -> Result<Vec<String>> {
    let pattern = format!("{}:{{*}}:q", keys::glob_escape(&shared.config.prefix));
    let mut names = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (next, found): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(connection)
            .await
            .map_err(|e| shared.error(ErrorKind::Unavailable, format!("Redis SCAN failed: {e}"), None))?;
        names.extend(found.iter().filter_map(|key| keys::name_of_queue(&shared.config.prefix, key)));
        if next == 0 {
            return Ok(names);
        }
        cursor = next;
    }
}
