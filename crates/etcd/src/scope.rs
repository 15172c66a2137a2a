//! The etcd scope: names shared by every machine that reaches the same etcd cluster and
//! key prefix.

use std::sync::Arc;

use latchkey_model::{
    block_on_until, validate_name, BoxFuture, ErrorKind, Name, RawLock, RawScope, Result, State, RWLOCK_CAPACITY,
};

use crate::lock::EtcdLock;
use crate::shared::{revoke, Shared};
use crate::{keys, Config};
use latchkey_remote::Driver;

/// A scope on an etcd cluster: `etcd://host1:2379,host2:2379/prefix?ttl=10s`.
///
/// One session (an etcd lease kept alive by one stream) carries every lock of the scope;
/// when it lapses, every guard of the scope reports `lost()`. Requests are keys on that
/// lease, granted in the order of their create revisions, which are their fencing tokens.
/// The scope runs its own thread: its blocking API needs no runtime, its async API works
/// on any executor.
///
/// ```no_run
/// use latchkey_model::RawScope;
/// let scope = latchkey_etcd::EtcdScope::open("etcd://127.0.0.1:2379/locks?ttl=5s")?;
/// let lock = scope.open("db-migrations", 1)?;
/// # Ok::<(), latchkey_model::Error>(())
/// ```
pub struct EtcdScope {
    shared: Arc<Shared>,
}

impl EtcdScope {
    /// Connects to the cluster `url` names and starts the scope's session, blocking.
    /// An unreachable cluster is an `Unavailable` error naming the endpoints.
    pub fn open(url: &str) -> Result<EtcdScope> {
        block_on_until(EtcdScope::connect(url), None).expect("no deadline")
    }

    /// The async form of [`open`](EtcdScope::open), on any executor.
    pub async fn connect(url: &str) -> Result<EtcdScope> {
        let config = Config::parse(url)?.with_environment();
        // The URL as errors, logs and `inspect` show it: without its password.
        let url = latchkey_model::redact_url(url);
        let driver = Arc::new(Driver::start("etcd").map_err(|e| e.with_scope(&url))?);
        let thread = driver.clone();
        let shared =
            driver.run(Shared::connect(url.clone(), config, thread)).await.map_err(|e| e.with_scope(&url))??;
        Ok(EtcdScope { shared: Arc::new(shared) })
    }
}

impl std::fmt::Debug for EtcdScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("EtcdScope").field(&self.shared.url).finish()
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // The last lock and guard are gone: end the session at once rather than at its
        // expiry (its keys go with it), then stop the thread.
        let farewell = self.current_lease().map(|lease| {
            Box::pin(revoke(self.client.clone(), lease))
                as std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>
        });
        self.driver.stop(farewell);
    }
}

impl RawScope for EtcdScope {
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
        Ok(Arc::new(EtcdLock::new(self.shared.clone(), Name::new(name).map_err(scoped)?, capacity)))
    }

    fn inspect(&self, name: &str) -> Result<State> {
        block_on_until(self.inspect_async(name), None).expect("no deadline")
    }

    fn inspect_async<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<State>> {
        Box::pin(async move {
            let name = Name::new(name).map_err(|e| e.with_scope(&self.shared.url))?;
            let queue = keys::queue_prefix(&self.shared.config.prefix, name.as_str());
            let shared = self.shared.clone();
            let read = async move {
                shared.driver.wait_background().await;
                shared.read_queue(&queue).await
            };
            let queue = self.shared.driver.run(read).await??;
            Ok(queue.state(name))
        })
    }

    fn list(&self) -> Result<Vec<State>> {
        block_on_until(self.list_async(), None).expect("no deadline")
    }

    fn list_async(&self) -> BoxFuture<'_, Result<Vec<State>>> {
        Box::pin(async move {
            let shared = self.shared.clone();
            let root = keys::names_root(&self.shared.config.prefix);
            let read = async move {
                shared.driver.wait_background().await;
                shared.read(&root).await
            };
            let kvs = self.shared.driver.run(read).await??;
            Ok(crate::queue::states(&self.shared.config.prefix, kvs))
        })
    }

    fn location(&self) -> Option<String> {
        let config = &self.shared.config;
        Some(format!("etcd {} under {:?}", config.endpoints.join(","), format!("{}/", config.prefix)))
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
