//! Scopes: where names live, opened from a URL.

use std::fmt;
use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use latchkey_host::HostScope;
use latchkey_model::{Error, ErrorKind, Name, RawScope, Result, State, MAX_SEMAPHORE_CAPACITY, RWLOCK_CAPACITY};
use latchkey_process::ProcessScope;

use crate::guard::{Held, RawRef};
use crate::handle::{deadline_after, with_timeout, Handle};
use crate::{Guard, IntervalLock, Lock, Mutex, RwLock, ScopeUrl, Semaphore};

/// A scope: a namespace of lock names, and who is excluded by them. Cheap to clone.
///
/// Locks are used by name directly ([`lock_blocking`](Scope::lock_blocking),
/// [`guard`](Scope::guard)) or through a primitive opened once and used many times
/// ([`mutex`](Scope::mutex), [`rwlock`](Scope::rwlock), [`semaphore`](Scope::semaphore),
/// [`interval_lock`](Scope::interval_lock)).
///
/// # Examples
/// ```
/// let scope = latchkey::Scope::open("process:")?;
/// let answer = scope.guard("db-migrations", || {
///     // ... run the migrations while holding the lock ...
///     42
/// })?;
/// assert_eq!(answer, 42);
///
/// let guard = scope.lock_blocking("user/42")?;
/// assert!(scope.is_locked("user/42")?);
/// assert!(scope.try_lock("user/42")?.is_none());
/// drop(guard);
/// # Ok::<(), latchkey::Error>(())
/// ```
#[derive(Clone)]
pub struct Scope(Inner);

#[derive(Clone)]
enum Inner {
    /// The process scope, called directly so that its fast paths inline.
    Process(Arc<ProcessScope>),
    /// Any other scope, through the scope contract.
    Raw(Arc<dyn RawScope>),
}

impl Scope {
    /// Opens the scope a URL names, blocking while it connects: `process:`, `host:` (the
    /// per-user namespace) or `host:/dir`, `etcd://host1:2379,host2:2379/prefix?ttl=10s`
    /// (with the Cargo feature `etcd`). `postgres://…` and `redis://…` are recognised and
    /// report `Unsupported`. A malformed URL is an `InvalidScope` error; a URL of a backend
    /// this build left out is an `Unsupported` error that names the Cargo feature.
    ///
    /// A scope over a network runs its own small runtime: the blocking API needs none
    /// from the caller, and the async API works on any executor.
    pub fn open(url: &str) -> Result<Scope> {
        match ScopeUrl::parse(url)? {
            ScopeUrl::Process => Ok(Scope::process()),
            ScopeUrl::Host(dir) => Ok(Scope::from_raw(Arc::new(HostScope::open(dir.as_deref())?))),
            ScopeUrl::Distributed { engine, url } => Ok(Scope::from_raw(crate::backends::open_blocking(engine, &url)?)),
        }
    }

    /// The async form of [`open`](Scope::open): connects to a scope over a network without
    /// blocking the caller's executor.
    pub async fn connect(url: &str) -> Result<Scope> {
        match ScopeUrl::parse(url)? {
            ScopeUrl::Distributed { engine, url } => Ok(Scope::from_raw(crate::backends::connect(engine, &url).await?)),
            _ => Scope::open(url),
        }
    }

    /// Gives back everything this scope holds and waits for, after the releases of
    /// dropped guards have run; a scope over a network ends its session. Every clone of the
    /// scope is closed: later operations fail with `Closed`. Local scopes have nothing to do.
    pub async fn close(&self) -> Result<()> {
        match &self.0 {
            Inner::Process(_) => Ok(()),
            Inner::Raw(raw) => raw.close().await,
        }
    }

    /// The blocking form of [`close`](Scope::close).
    pub fn close_blocking(&self) -> Result<()> {
        latchkey_model::block_on_until(self.close(), None).expect("no deadline")
    }

    /// The scope of this process's threads and tasks (`process:`).
    pub fn process() -> Scope {
        static PROCESS: OnceLock<Arc<ProcessScope>> = OnceLock::new();
        Scope(Inner::Process(PROCESS.get_or_init(Default::default).clone()))
    }

    /// A new process scope of its own, whose names nobody else sees (for tests, or to
    /// keep two parts of a program apart).
    pub fn isolated() -> Scope {
        Scope(Inner::Process(Arc::new(ProcessScope::new())))
    }

    /// Wraps an implementation of the scope contract.
    pub fn from_raw(raw: Arc<dyn RawScope>) -> Scope {
        Scope(Inner::Raw(raw))
    }

    /// The scope's URL.
    pub fn url(&self) -> &str {
        match &self.0 {
            Inner::Process(_) => latchkey_process::URL,
            Inner::Raw(raw) => raw.url(),
        }
    }

    /// Where the scope keeps its state, for people to read: for the host scope, the
    /// namespace directory (`/tmp/latchkey-<uid>` for `host:`); `None` for the process
    /// scope.
    pub fn location(&self) -> Option<String> {
        match &self.0 {
            Inner::Process(_) => None,
            Inner::Raw(raw) => raw.location(),
        }
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
    /// Other primitives see it as a mutex.
    /// Fails with `Unsupported` in a scope that cannot cede.
    pub fn interval_lock(&self, name: &str, interval: Duration) -> Result<IntervalLock> {
        let handle = self.handle(name, 1)?;
        if !handle.can_cede() {
            return Err(Error::new(ErrorKind::Unsupported, "this scope cannot cede, which an interval lock needs")
                .with_name(name)
                .with_scope(self.url()));
        }
        Ok(IntervalLock::new(handle, interval))
    }

    /// Takes the mutex `name` if it is free and nobody waits.
    #[inline]
    pub fn try_lock(&self, name: &str) -> Result<Option<Guard<'static>>> {
        match self.try_lock_cached(name) {
            Some(guard) => Ok(Some(guard)),
            None => self.try_lock_slow(name),
        }
    }

    /// The lock-free path of the process scope for a name this thread used recently.
    #[inline]
    fn try_lock_cached(&self, name: &str) -> Option<Guard<'static>> {
        match &self.0 {
            Inner::Process(scope) => scope.try_acquire_cached(name, 1, 1).map(|p| Guard::new(Held::Process(p))),
            Inner::Raw(_) => None,
        }
    }

    #[cold]
    fn try_lock_slow(&self, name: &str) -> Result<Option<Guard<'static>>> {
        match &self.0 {
            Inner::Process(scope) => Ok(scope.try_acquire(name, 1, 1)?.map(|p| Guard::new(Held::Process(p)))),
            Inner::Raw(raw) => {
                let lock = raw.open_once(name, 1)?;
                Ok(lock.try_acquire(1)?.map(|lease| Guard::new(Held::raw(RawRef::Owned(lock), lease))))
            }
        }
    }

    /// The async form of [`try_lock`](Scope::try_lock), for scopes over a network.
    pub async fn try_lock_async(&self, name: &str) -> Result<Option<Guard<'static>>> {
        match &self.0 {
            Inner::Process(_) => self.try_lock(name),
            Inner::Raw(raw) => {
                let lock = raw.open_once(name, 1)?;
                let lease = lock.try_acquire_async(1).await?;
                Ok(lease.map(|lease| Guard::new(Held::raw(RawRef::Owned(lock), lease))))
            }
        }
    }

    /// Blocks until the mutex `name` is granted.
    #[inline]
    pub fn lock_blocking(&self, name: &str) -> Result<Guard<'static>> {
        match self.try_lock_cached(name) {
            Some(guard) => Ok(guard),
            None => self.lock_blocking_until(name, None),
        }
    }

    /// Blocks at most `timeout` for the mutex `name`, then fails with `Timeout`.
    pub fn lock_blocking_timeout(&self, name: &str, timeout: Duration) -> Result<Guard<'static>> {
        self.lock_blocking_until(name, Instant::now().checked_add(timeout))
    }

    /// Waits for the mutex `name`.
    pub async fn lock(&self, name: &str) -> Result<Guard<'static>> {
        self.lock_async(name, None).await
    }

    /// Waits at most `timeout` for the mutex `name`, then fails with `Timeout`. Works on
    /// any executor.
    pub async fn lock_timeout(&self, name: &str, timeout: Duration) -> Result<Guard<'static>> {
        self.lock_async(name, Some(timeout)).await
    }

    /// Runs `f` while holding the mutex `name`, blocking for it; returns what `f` returns.
    pub fn guard<T>(&self, name: &str, f: impl FnOnce() -> T) -> Result<T> {
        let guard = self.lock_blocking(name)?;
        let output = f();
        guard.release()?;
        Ok(output)
    }

    /// Runs the future `f` makes while holding the mutex `name`; returns its output.
    pub async fn guard_async<T, F: Future<Output = T>>(&self, name: &str, f: impl FnOnce() -> F) -> Result<T> {
        let guard = self.lock(name).await?;
        let output = f().await;
        guard.release()?;
        Ok(output)
    }

    /// A snapshot of `name`: holders, permits in use, waiters.
    pub fn inspect(&self, name: &str) -> Result<State> {
        match &self.0 {
            Inner::Process(scope) => scope.inspect(name),
            Inner::Raw(raw) => raw.inspect(name),
        }
    }

    /// The async form of [`inspect`](Scope::inspect), for scopes over a network.
    pub async fn inspect_async(&self, name: &str) -> Result<State> {
        match &self.0 {
            Inner::Process(scope) => scope.inspect(name),
            Inner::Raw(raw) => raw.inspect_async(name).await,
        }
    }

    /// Whether anybody holds `name`.
    pub fn is_locked(&self, name: &str) -> Result<bool> {
        Ok(self.inspect(name)?.is_locked())
    }

    /// The async form of [`is_locked`](Scope::is_locked).
    pub async fn is_locked_async(&self, name: &str) -> Result<bool> {
        Ok(self.inspect_async(name).await?.is_locked())
    }

    /// Snapshots of every name that is held or waited for.
    pub fn list(&self) -> Result<Vec<State>> {
        match &self.0 {
            Inner::Process(scope) => Ok(scope.list()),
            Inner::Raw(raw) => raw.list(),
        }
    }

    /// The async form of [`list`](Scope::list).
    pub async fn list_async(&self) -> Result<Vec<State>> {
        match &self.0 {
            Inner::Process(scope) => Ok(scope.list()),
            Inner::Raw(raw) => raw.list_async().await,
        }
    }

    #[cold]
    fn lock_blocking_until(&self, name: &str, deadline: Option<Instant>) -> Result<Guard<'static>> {
        match &self.0 {
            Inner::Process(scope) => Ok(Guard::new(Held::Process(scope.acquire_blocking(name, 1, 1, deadline)?))),
            Inner::Raw(raw) => {
                let lock = raw.open_once(name, 1)?;
                let lease = lock.acquire_blocking(1, deadline)?;
                Ok(Guard::new(Held::raw(RawRef::Owned(lock), lease)))
            }
        }
    }

    async fn lock_async(&self, name: &str, timeout: Option<Duration>) -> Result<Guard<'static>> {
        match &self.0 {
            Inner::Process(scope) => {
                if let Some(guard) = self.try_lock_cached(name) {
                    return Ok(guard);
                }
                if let Some(permit) = scope.try_acquire(name, 1, 1)? {
                    return Ok(Guard::new(Held::Process(permit)));
                }
                let name = Name::new(name).map_err(|e| e.with_scope(self.url()))?;
                let permit = with_timeout(scope.acquire(name.as_str(), 1, 1), timeout, &name, self.url()).await?;
                Ok(Guard::new(Held::Process(permit)))
            }
            // The scope takes the deadline, and tries at once before it queues.
            Inner::Raw(raw) => {
                let lock = raw.open_once(name, 1)?;
                let lease = lock.acquire(1, deadline_after(timeout)).await?;
                Ok(Guard::new(Held::raw(RawRef::Owned(lock), lease)))
            }
        }
    }

    /// The name `name` with `capacity` permits, as the one model under every primitive:
    /// see [`Lock`]. Its guards borrow nothing (what bindings for other languages need).
    pub fn open_lock(&self, name: &str, capacity: u32) -> Result<Lock> {
        Ok(Lock::new(self.handle(name, capacity)?))
    }

    fn handle(&self, name: &str, capacity: u32) -> Result<Handle> {
        Ok(match &self.0 {
            Inner::Process(scope) => Handle::Process(scope.open(name, capacity)?),
            Inner::Raw(raw) => Handle::Raw(raw.open(name, capacity)?),
        })
    }
}

impl fmt::Debug for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Scope").field(&self.url()).finish()
    }
}
