//! Helpers shared by the suites: the scopes under test, hand-polled futures, a counting
//! waker, a non-atomic counter, and small waits on conditions.

pub mod worker;

use std::cell::UnsafeCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use latchkey::{Error, ErrorKind, Scope};

/// Instantiates `$suite!(module_name, factory)` once for every scope under test.
///
/// A new scope is one more line here; every suite written with it then runs against it.
macro_rules! for_each_scope {
    ($suite:ident) => {
        $suite!(process_static, $crate::support::process_static);
        $suite!(process_raw, $crate::support::process_raw);
        $suite!(host, $crate::support::host);
        $suite!(etcd, $crate::support::etcd);
        $suite!(postgres, $crate::support::postgres);
        $suite!(redis, $crate::support::redis);
        $suite!(redis_cluster, $crate::support::redis_cluster);
    };
}

/// [`for_each_scope!`] for the scopes of one machine only: the stress suite's tens of
/// thousands of grants are for the local engines' races; a scope over a network has its
/// own stress under faults (`crates/etcd/tests/faults.rs`: a fenced counter).
macro_rules! for_each_local_scope {
    ($suite:ident) => {
        $suite!(process_static, $crate::support::process_static);
        $suite!(process_raw, $crate::support::process_raw);
        $suite!(host, $crate::support::host);
    };
}

/// Declares `#[test] fn test() -> latchkey::Result<()>` in the current module for each
/// listed `test`, calling `super::test(factory)`.
macro_rules! scope_tests {
    ($factory:path; $($test:ident),* $(,)?) => {
        $(
            #[test]
            fn $test() -> latchkey::Result<()> {
                super::$test($factory)
            }
        )*
    };
}

/// Makes a fresh scope, with a namespace of its own.
pub type NewScope = fn() -> Scope;

/// The process scope, reached through static dispatch.
pub fn process_static() -> Scope {
    Scope::isolated()
}

/// The process engine, reached through the dyn scope contract (`RawScope`/`RawLock`).
pub fn process_raw() -> Scope {
    Scope::from_raw(Arc::new(latchkey_process::ProcessScope::new()))
}

/// A new, empty directory under the temp directory, named after `prefix`, this process
/// and a counter. A directory of that name left by an earlier run (a reused pid) is
/// removed first.
pub fn fresh_dir(prefix: &str) -> std::path::PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir =
        std::env::temp_dir().join(format!("{prefix}-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed)));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A directory removed when dropped.
pub struct TempDir(pub std::path::PathBuf);

impl std::ops::Deref for TempDir {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl AsRef<std::path::Path> for TempDir {
    fn as_ref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The host scope, in a namespace directory of its own, removed when the test process
/// exits. (A namespace whose directory is deleted while in use is lost: its holds report
/// `HandleLost` and nothing more is granted in it.)
pub fn host() -> Scope {
    let dir = remove_at_exit(fresh_dir("latchkey-test"));
    Scope::open(&format!("host:{}", dir.display())).expect("the host scope opens in a fresh directory")
}

/// The etcd scope, under a prefix of its own on a one-member etcd cluster that this test
/// process starts once and stops when it exits (see `latchkey_testkit::EtcdCluster`).
/// The TTL is short so that lost sessions show quickly.
pub fn etcd() -> Scope {
    OVER_A_NETWORK.store(true, Ordering::Relaxed);
    Scope::open(&etcd_url()).expect("the etcd scope opens on the test's cluster")
}

/// The PostgreSQL scope, in a schema of its own on a server that this test process starts
/// once and stops when it exits (see `latchkey_testkit::PostgresServer`). The TTL is short
/// so that lost sessions show quickly.
pub fn postgres() -> Scope {
    OVER_A_NETWORK.store(true, Ordering::Relaxed);
    Scope::open(&postgres_url()).expect("the PostgreSQL scope opens on the test's server")
}

/// A new URL of the PostgreSQL scope: a fresh schema on this process's server.
pub fn postgres_url() -> String {
    use std::sync::Mutex;
    static SERVER: Mutex<Option<latchkey_testkit::PostgresServer>> = Mutex::new(None);
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    extern "C" fn stop() {
        if let Ok(mut server) = SERVER.lock() {
            drop(server.take());
        }
    }
    let mut server = SERVER.lock().unwrap();
    if server.is_none() {
        *server = Some(latchkey_testkit::PostgresServer::start());
        // SAFETY: registers a plain function to run at exit.
        unsafe { libc::atexit(stop) };
    }
    let schema = format!("test_{}", NEXT.fetch_add(1, Ordering::Relaxed));
    server.as_ref().expect("started above").url(&format!("ttl=3s&schema={schema}"))
}

/// The Redis scope, under a key prefix of its own on a server that this test process
/// starts once and stops when it exits (see `latchkey_testkit::RedisServer`).
pub fn redis() -> Scope {
    OVER_A_NETWORK.store(true, Ordering::Relaxed);
    Scope::open(&redis_url()).expect("the Redis scope opens on the test's server")
}

/// A new URL of the Redis scope: a fresh key prefix on this process's server.
pub fn redis_url() -> String {
    use std::sync::Mutex;
    static SERVER: Mutex<Option<latchkey_testkit::RedisServer>> = Mutex::new(None);
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    extern "C" fn stop() {
        if let Ok(mut server) = SERVER.lock() {
            drop(server.take());
        }
    }
    let mut server = SERVER.lock().unwrap();
    if server.is_none() {
        *server = Some(latchkey_testkit::RedisServer::start());
        // SAFETY: registers a plain function to run at exit.
        unsafe { libc::atexit(stop) };
    }
    let prefix = format!("test{}", NEXT.fetch_add(1, Ordering::Relaxed));
    server.as_ref().expect("started above").url(&format!("ttl=3s&prefix={prefix}"))
}

/// The Redis scope on a Redis Cluster of three primaries (`cluster=1`), under a key prefix
/// of its own, on a cluster that this test process starts once and stops when it exits
/// (see `latchkey_testkit::RedisCluster`).
pub fn redis_cluster() -> Scope {
    use std::sync::Mutex;
    static CLUSTER: Mutex<Option<latchkey_testkit::RedisCluster>> = Mutex::new(None);
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    extern "C" fn stop() {
        if let Ok(mut cluster) = CLUSTER.lock() {
            drop(cluster.take());
        }
    }
    OVER_A_NETWORK.store(true, Ordering::Relaxed);
    let mut cluster = CLUSTER.lock().unwrap();
    if cluster.is_none() {
        *cluster = Some(latchkey_testkit::RedisCluster::start(3));
        // SAFETY: registers a plain function to run at exit.
        unsafe { libc::atexit(stop) };
    }
    let prefix = format!("test{}", NEXT.fetch_add(1, Ordering::Relaxed));
    let url = cluster.as_ref().expect("started above").url(&format!("ttl=3s&prefix={prefix}"));
    Scope::open(&url).expect("the Redis scope opens on the test's cluster")
}

/// Whether this test process tests a scope over a network, set by its factory. The
/// differences between scopes are parameters of the suites, not copies of them: a request
/// of such a scope is made on the scope's own thread, so a future's first poll does not
/// yet show it queued or granted (see [`Probe::ready`] and [`queued`]), and a capacity is
/// checked against the requests on the server, not against handles merely open (see
/// [`capacity_checked_on_open`]).
static OVER_A_NETWORK: AtomicBool = AtomicBool::new(false);

/// Whether the scope checks a capacity when a name is opened (local scopes), or only
/// against the requests queued for it (scopes over a network).
pub fn capacity_checked_on_open(_scope: &Scope) -> bool {
    !OVER_A_NETWORK.load(Ordering::Relaxed)
}

/// Whether `inspect` reports the token of a grant already released as `last_token` (local
/// scopes); a scope over a network knows the tokens of the requests on the server only.
pub fn remembers_released_tokens(_scope: &Scope) -> bool {
    !OVER_A_NETWORK.load(Ordering::Relaxed)
}

/// Waits until `count` requests wait for `name`: at once for a local scope, whose
/// requests are queued when first polled; a moment later for a scope over a network.
/// Tests that order waiters call it after polling each one.
#[track_caller]
pub fn queued(scope: &Scope, name: &str, count: usize) {
    wait_until(&format!("{count} requests wait for {name:?}"), || waiters(scope, name) >= count);
}

/// A new URL of the etcd scope: a fresh prefix on this process's cluster.
pub fn etcd_url() -> String {
    use std::sync::Mutex;
    static CLUSTER: Mutex<Option<latchkey_testkit::EtcdCluster>> = Mutex::new(None);
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    extern "C" fn stop() {
        if let Ok(mut cluster) = CLUSTER.lock() {
            drop(cluster.take());
        }
    }
    let mut cluster = CLUSTER.lock().unwrap();
    if cluster.is_none() {
        *cluster = Some(latchkey_testkit::EtcdCluster::start(1));
        // SAFETY: registers a plain function to run at exit.
        unsafe { libc::atexit(stop) };
    }
    let prefix = format!("test-{}", NEXT.fetch_add(1, Ordering::Relaxed));
    cluster.as_ref().expect("started above").url_with(&prefix, "ttl=3s")
}

/// Removes `dir` when the process exits, and returns it.
pub fn remove_at_exit(dir: std::path::PathBuf) -> std::path::PathBuf {
    static DIRS: std::sync::Mutex<Vec<std::path::PathBuf>> = std::sync::Mutex::new(Vec::new());
    static REGISTER: std::sync::Once = std::sync::Once::new();
    extern "C" fn remove_all() {
        for dir in DIRS.lock().map(|mut dirs| std::mem::take(&mut *dirs)).unwrap_or_default() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
    // SAFETY: registers a plain function to run at exit.
    REGISTER.call_once(|| unsafe {
        libc::atexit(remove_all);
    });
    DIRS.lock().unwrap().push(dir.clone());
    dir
}

/// A waker that counts how often it was woken.
#[derive(Default)]
pub struct WakeCount(AtomicUsize);

impl Wake for WakeCount {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// A future polled by hand, with a waker of its own that counts its wake-ups.
pub struct Probe<'a, T> {
    future: Option<Pin<Box<dyn Future<Output = T> + 'a>>>,
    count: Arc<WakeCount>,
    waker: Waker,
}

impl<'a, T> Probe<'a, T> {
    /// Wraps `future` without polling it.
    pub fn new(future: impl Future<Output = T> + 'a) -> Self {
        let count = Arc::new(WakeCount::default());
        let waker = Waker::from(count.clone());
        Probe { future: Some(Box::pin(future)), count, waker }
    }

    /// Polls once.
    pub fn poll(&mut self) -> Poll<T> {
        let future = self.future.as_mut().expect("polled after it completed");
        let poll = future.as_mut().poll(&mut Context::from_waker(&self.waker));
        if poll.is_ready() {
            self.future = None;
        }
        poll
    }

    /// Polls once and asserts that the future is still pending.
    #[track_caller]
    pub fn assert_pending(&mut self) {
        assert!(self.poll().is_pending(), "expected the future to be pending");
    }

    /// Polls once and returns the output; panics if the future is pending. For a scope over
    /// a network, whose answers come from its own thread, polls until the output comes.
    #[track_caller]
    pub fn ready(&mut self) -> T {
        let start = Instant::now();
        loop {
            match self.poll() {
                Poll::Ready(output) => return output,
                Poll::Pending if OVER_A_NETWORK.load(Ordering::Relaxed) => {
                    assert!(start.elapsed() < Duration::from_secs(60), "gave up waiting for the future");
                    std::thread::sleep(Duration::from_millis(1));
                }
                Poll::Pending => panic!("expected the future to be ready"),
            }
        }
    }

    /// How often the future's waker was woken so far.
    pub fn wakes(&self) -> usize {
        self.count.0.load(Ordering::SeqCst)
    }

    /// Waits until the waker was woken `count` times: a scope may deliver a wake from
    /// another thread (the host scope's waiters sleep on a futex) a moment after the
    /// release that caused it. Which waiter is woken is what the tests check.
    #[track_caller]
    pub fn wait_for_wakes(&self, count: usize) {
        wait_until("the expected wake-up", || self.wakes() >= count);
    }
}

/// Spins (yielding the thread) until `condition` holds. This only waits for a state
/// another thread is known to reach (a waiter to be queued); it never orders events.
/// The generous limit turns a hang into a failure.
#[track_caller]
pub fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < Duration::from_secs(60), "gave up waiting until {what}");
        std::thread::yield_now();
    }
}

/// How many requests wait for `name` in `scope`.
pub fn waiters(scope: &Scope, name: &str) -> usize {
    scope.inspect(name).expect("inspect a valid name").waiters
}

/// A current-thread Tokio runtime with its time driver.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_time().build().expect("a runtime")
}

/// A multi-thread Tokio runtime of `workers` workers, with its time driver.
pub fn multi_thread_runtime(workers: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(workers).enable_time().build().expect("a runtime")
}

/// Asserts that `result` is an error of `kind`, and returns the error.
#[track_caller]
pub fn expect_err<T>(result: latchkey::Result<T>, kind: ErrorKind) -> Error {
    match result {
        Ok(_) => panic!("expected a {kind:?} error, got Ok"),
        Err(err) => {
            assert_eq!(err.kind(), kind, "{err}");
            assert_eq!(err.code(), kind.code(), "{err}");
            err
        }
    }
}

/// A value that is NOT synchronized by itself: the lock under test must make every
/// access exclusive, or the test's counts come out wrong (and Miri/TSan would object).
pub struct Unsync<T>(UnsafeCell<T>);

// SAFETY: every access goes through `Unsync::with`, whose callers hold the lock under
// test (checked by a `Critical` section); checking that exclusion is the point.
unsafe impl<T: Send> Sync for Unsync<T> {}

impl<T> Unsync<T> {
    /// Wraps `value`.
    pub fn new(value: T) -> Self {
        Unsync(UnsafeCell::new(value))
    }

    /// Runs `f` on the value.
    ///
    /// # Safety
    /// The caller holds the lock that guards this value, so no other access overlaps.
    pub unsafe fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        // SAFETY: exclusive by the caller's contract.
        f(unsafe { &mut *self.0.get() })
    }

    /// The value, once every thread is done.
    pub fn into_inner(self) -> T {
        self.0.into_inner()
    }
}

/// A section that must never have two occupants: a flag set on entry, cleared on exit,
/// and a non-atomic counter bumped inside.
pub struct Critical {
    inside: AtomicBool,
    count: Unsync<u64>,
}

impl Default for Critical {
    fn default() -> Self {
        Critical { inside: AtomicBool::new(false), count: Unsync::new(0) }
    }
}

impl Critical {
    /// Enters the section (asserting nobody is inside) and bumps the counter with a
    /// non-atomic read-modify-write. Call it only while holding the lock.
    #[track_caller]
    pub fn enter(&self) -> Occupant<'_> {
        assert!(!self.inside.swap(true, Ordering::SeqCst), "two holders inside the critical section at once");
        // SAFETY: the caller holds the lock guarding the section, and `inside` was clear.
        unsafe {
            self.count.with(|count| {
                let seen = std::hint::black_box(*count);
                *count = seen + 1;
            })
        };
        Occupant(self)
    }

    /// How often the section was entered.
    pub fn count(self) -> u64 {
        self.count.into_inner()
    }
}

/// Inside a [`Critical`] section; leaving is dropping it (before the lock's guard).
pub struct Occupant<'a>(&'a Critical);

impl Drop for Occupant<'_> {
    fn drop(&mut self) {
        self.0.inside.store(false, Ordering::SeqCst);
    }
}

/// A small, seeded xorshift generator: reproducible choices with no dependency.
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed` (any value).
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// A number below `bound`.
    pub fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound
    }
}
