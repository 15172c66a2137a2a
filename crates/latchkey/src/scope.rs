//! Scopes: where names live, opened from a URL.

use std::fmt;
use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use latchkey_model::{Error, ErrorKind, RawScope, Result, State, MAX_SEMAPHORE_CAPACITY, RWLOCK_CAPACITY};
use latchkey_process::ProcessScope;

use crate::handle::Handle;
use crate::{IntervalLock, Mutex, RwLock, ScopeUrl, Semaphore};

/// A scope: a namespace of lock names and who is excluded by them. Cheap to clone.
///
/// # Examples
/// ```
/// let scope = latchkey::Scope::open("process:")?;
/// let token = scope.guard("db-migrations", || {
///     // ... run the migrations while holding the lock ...
///     42
/// })?;
/// assert_eq!(token, 42);
/// assert!(!scope.is_locked("db-migrations")?);
/// # Ok::<(), latchkey::Error>(())
/// ```
#[derive(Clone)]
pub struct Scope(Arc<dyn RawScope>);

impl Scope {
    /// Opens the scope a URL names: `process:` today; `host:`, `host:/dir`, `etcd://…`,
    /// `postgres://…` and `redis://…` are recognised and report `Unsupported` until their
    /// scopes are built in.
    pub fn open(url: &str) -> Result<Scope> {
        match ScopeUrl::parse(url)? {
            ScopeUrl::Process => Ok(Scope::process()),
            ScopeUrl::Host(_) | ScopeUrl::Distributed { .. } => {
                Err(Error::new(ErrorKind::Unsupported, "this scope is not built into this version of latchkey")
                    .with_scope(url))
            }
        }
    }

    /// The scope of this process's threads and tasks (`process:`).
    pub fn process() -> Scope {
        static PROCESS: OnceLock<Scope> = OnceLock::new();
        PROCESS.get_or_init(|| Scope::from_raw(Arc::new(ProcessScope::new()))).clone()
    }

    /// Wraps a scope implementation.
    pub fn from_raw(raw: Arc<dyn RawScope>) -> Scope {
        Scope(raw)
    }

    /// The scope's URL.
    pub fn url(&self) -> &str {
        self.0.url()
    }

    /// The mutex called `name`.
    pub fn mutex(&self, name: &str) -> Result<Mutex> {
        Ok(Mutex::new(self.handle(name, 1)?))
    }

    /// The reader-writer lock called `name`.
    pub fn rwlock(&self, name: &str) -> Result<RwLock> {
        Ok(RwLock::new(self.handle(name, RWLOCK_CAPACITY)?))
    }

    /// The semaphore called `name`, of `permits` permits.
    pub fn semaphore(&self, name: &str, permits: u32) -> Result<Semaphore> {
        if permits == 0 || permits > MAX_SEMAPHORE_CAPACITY {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!("a semaphore has 1 to {MAX_SEMAPHORE_CAPACITY} permits, not {permits}"),
            )
            .with_name(name)
            .with_scope(self.url()));
        }
        Ok(Semaphore::new(self.handle(name, permits)?))
    }

    /// The interval lock called `name`, whose holder cedes to waiters after `interval`.
    /// It is a mutex with respect to other primitives of the same name.
    pub fn interval_lock(&self, name: &str, interval: Duration) -> Result<IntervalLock> {
        Ok(IntervalLock::new(self.handle(name, 1)?, interval))
    }

    /// A snapshot of `name`: holders, permits in use, waiters.
    pub fn inspect(&self, name: &str) -> Result<State> {
        self.0.inspect(name)
    }

    /// Whether anybody holds `name`.
    pub fn is_locked(&self, name: &str) -> Result<bool> {
        Ok(self.inspect(name)?.is_locked())
    }

    /// Snapshots of every name that is held or waited for.
    pub fn list(&self) -> Result<Vec<State>> {
        self.0.list()
    }

    /// Runs `f` while holding the mutex `name`, blocking for it; returns what `f` returns.
    pub fn guard<T>(&self, name: &str, f: impl FnOnce() -> T) -> Result<T> {
        let mutex = self.mutex(name)?;
        let guard = mutex.lock_blocking()?;
        let output = f();
        guard.release()?;
        Ok(output)
    }

    /// Runs the future `f` makes while holding the mutex `name`; returns its output.
    pub async fn guard_async<T, F: Future<Output = T>>(&self, name: &str, f: impl FnOnce() -> F) -> Result<T> {
        let mutex = self.mutex(name)?;
        let guard = mutex.lock().await?;
        let output = f().await;
        guard.release()?;
        Ok(output)
    }

    fn handle(&self, name: &str, capacity: u32) -> Result<Handle> {
        Ok(Handle(self.0.open(name, capacity)?))
    }
}

impl fmt::Debug for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Scope").field(&self.url()).finish()
    }
}
