//! The PostgreSQL scope: names shared by every client of the same database and schema.

use std::sync::Arc;

use latchkey_model::{
    block_on_until, validate_name, BoxFuture, ErrorKind, Name, RawLock, RawScope, Result, State, RWLOCK_CAPACITY,
};
use latchkey_remote::Driver;

use crate::lock::{inspect, states, PostgresLock};
use crate::shared::Shared;
use crate::Config;

/// A scope on a PostgreSQL database: `postgres://user:password@host:5432/dbname?ttl=10s`.
///
/// One connection, one server session, carries every lock of the scope; when it ends,
/// every guard of the scope reports `lost()`. Requests are rows of the schema's tables
/// (made on first use), granted in the order of their tokens, which are their fencing
/// tokens. The scope runs its own thread: its blocking API needs no runtime, its async API
/// works on any executor.
///
/// ```no_run
/// use latchkey_model::RawScope;
/// let scope = latchkey_postgres::PostgresScope::open("postgres://app@db.internal/app?ttl=10s")?;
/// let lock = scope.open("db-migrations", 1)?;
/// # Ok::<(), latchkey_model::Error>(())
/// ```
pub struct PostgresScope {
    shared: Arc<Shared>,
}

impl PostgresScope {
    /// Connects to the database `url` names and starts the scope's session, blocking.
    /// An unreachable server is an `Unavailable` error naming it.
    pub fn open(url: &str) -> Result<PostgresScope> {
        block_on_until(PostgresScope::connect(url), None).expect("no deadline")
    }

    /// The async form of [`open`](PostgresScope::open), on any executor.
    pub async fn connect(url: &str) -> Result<PostgresScope> {
        let config = Config::parse(url)?;
        // The URL as errors, logs and `inspect` show it: without its password.
        let url = latchkey_model::redact_url(url);
        let driver = Arc::new(Driver::start("PostgreSQL").map_err(|e| e.with_scope(&url))?);
        let thread = driver.clone();
        let shared =
            driver.run(Shared::connect(url.clone(), config, thread)).await.map_err(|e| e.with_scope(&url))??;
        Ok(PostgresScope { shared: Arc::new(shared) })
    }
}

impl std::fmt::Debug for PostgresScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("PostgresScope").field(&self.shared.url).finish()
    }
}

impl RawScope for PostgresScope {
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
        Ok(Arc::new(PostgresLock::new(self.shared.clone(), Name::new(name).map_err(scoped)?, capacity)))
    }

    fn inspect(&self, name: &str) -> Result<State> {
        block_on_until(self.inspect_async(name), None).expect("no deadline")
    }

    fn inspect_async<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<State>> {
        Box::pin(async move {
            let name = Name::new(name).map_err(|e| e.with_scope(&self.shared.url))?;
            let shared = self.shared.clone();
            let scoped = |e: latchkey_model::Error| e.with_scope(&self.shared.url);
            self.shared.driver.run(async move { inspect(&shared, name).await }).await.map_err(scoped)?.map_err(scoped)
        })
    }

    fn list(&self) -> Result<Vec<State>> {
        block_on_until(self.list_async(), None).expect("no deadline")
    }

    fn list_async(&self) -> BoxFuture<'_, Result<Vec<State>>> {
        Box::pin(async move {
            let shared = self.shared.clone();
            let read = async move {
                shared.driver.wait_background().await;
                let session = shared.session().await?;
                let rows = session
                    .client
                    .query(&session.statements.live, &[&None::<&str>])
                    .await
                    .map_err(|e| session.failed("listing the queues", e))?;
                Ok(states(&rows))
            };
            let scoped = |e: latchkey_model::Error| e.with_scope(&self.shared.url);
            self.shared.driver.run(read).await.map_err(scoped)?.map_err(scoped)
        })
    }

    fn location(&self) -> Option<String> {
        let config = &self.shared.config;
        Some(format!("PostgreSQL {} in schema {:?}", config.describe(), config.schema))
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
