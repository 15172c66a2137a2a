//! The processes of the crash-point test: this test binary run again with
//! `LATCHKEY_CRASH_ROLE` set to `ghost`, `victim` or `bystander`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use latchkey_host::HostScope;
use latchkey_model::{ErrorKind, RawLock, RawScope, RWLOCK_CAPACITY};

/// The names every role uses: a mutex, a reader-writer lock, a semaphore of 3.
pub const NAMES: [&str; 3] = ["m", "rw", "sem"];

/// Names the victim makes besides [`NAMES`], which the check touches too.
pub fn other_names() -> impl Iterator<Item = String> {
    ["cap", "q", "t"].into_iter().map(String::from).chain((0..MANY).map(|i| format!("many/{i}"))).chain(churned())
}

/// Live processes of the `Crowded` setup: every slot of the first chunk.
pub const CROWD: usize = 8;

/// Handles the victim keeps open at once: more than one arena chunk of entries.
const MANY: usize = 70;
/// Names the victim makes and closes: enough for the table to grow and sweep.
const CHURN: usize = 2100;

fn churned() -> impl Iterator<Item = String> {
    (0..CHURN).map(|i| format!("churn/{i}"))
}

/// What is left in the namespace before the victim starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Setup {
    /// Nothing.
    Plain,
    /// A process that died inside the record lock of `m`, in the middle of a release.
    GhostInRecordLock,
    /// The same, and its slot's incarnation about to wrap around: the victim, which takes
    /// the slot next, takes an incarnation that names the ghost's lock words, and disowns them.
    GhostInRecordLockWrapped,
    /// A process that died inside the table lock, in the middle of adding a name.
    GhostInTableLock,
    /// A process killed while it held `m`, `rw` and `sem` and waited for `q`: its slot is
    /// the first the victim finds free, so the victim cleans it up.
    GhostHolding,
    /// The same, but the victim opened the namespace first (and waited for the test to
    /// tell it to go on): it finds the dead holder when it uses the names, and repairs.
    GhostDiesLater,
    /// Every process slot of the first chunk taken by live processes: the victim's open
    /// adds slots.
    Crowded,
}

impl Setup {
    /// Every setup.
    pub const ALL: [Setup; 7] = [
        Setup::Plain,
        Setup::GhostInRecordLock,
        Setup::GhostInRecordLockWrapped,
        Setup::GhostInTableLock,
        Setup::GhostHolding,
        Setup::GhostDiesLater,
        Setup::Crowded,
    ];

    /// The crash point where the ghost dies ("" for killed from outside), if there is one.
    pub fn ghost_death(self) -> Option<&'static str> {
        match self {
            Setup::GhostInRecordLock | Setup::GhostInRecordLockWrapped => Some("release/hold.returned"),
            Setup::GhostInTableLock => Some("create/create.written"),
            Setup::GhostHolding | Setup::GhostDiesLater => Some(""),
            Setup::Plain | Setup::Crowded => None,
        }
    }

    fn from_env() -> Setup {
        let name = std::env::var("LATCHKEY_CRASH_SETUP").unwrap();
        *Setup::ALL.iter().find(|s| format!("{s:?}") == name).unwrap()
    }
}

/// The entry point of every role (a test that does nothing unless a role is set).
#[test]
fn role() {
    let Ok(role) = std::env::var("LATCHKEY_CRASH_ROLE") else { return };
    let dir = PathBuf::from(std::env::var_os("LATCHKEY_CRASH_DIR").unwrap());
    let setup = Setup::from_env();
    let scope = HostScope::open(Some(&dir)).unwrap();
    match role.as_str() {
        "ghost" => ghost(&scope, setup),
        "victim" => victim(&scope, setup),
        "bystander" => bystander(&scope),
        "filler" => {
            say("ready");
            std::thread::sleep(Duration::from_secs(600));
        }
        other => panic!("unknown role {other}"),
    }
}

fn open(scope: &HostScope, name: &str, capacity: u32) -> Arc<dyn RawLock> {
    scope.open(name, capacity).unwrap()
}

fn say(line: &str) {
    use std::io::Write;
    println!("{line}");
    std::io::stdout().flush().unwrap();
}

/// Leaves what its setup wants, and dies (at a crash point, or killed by the test).
fn ghost(scope: &HostScope, setup: Setup) {
    let (m, rw, sem) = (open(scope, "m", 1), open(scope, "rw", RWLOCK_CAPACITY), open(scope, "sem", 3));
    match setup {
        Setup::GhostInRecordLock | Setup::GhostInRecordLockWrapped => {
            let lease = m.acquire_blocking(1, None).unwrap();
            let _ = m.release(lease); // dies inside, at "release/hold.returned"
        }
        Setup::GhostInTableLock => {
            let _ = scope.open("t", 1); // dies inside, at "create/create.written"
        }
        Setup::GhostHolding | Setup::GhostDiesLater => {
            let held = (m.acquire_blocking(1, None), rw.acquire_blocking(1, None), sem.acquire_blocking(1, None));
            let q = open(scope, "q", 1);
            let q_held = q.acquire_blocking(1, None).unwrap();
            std::thread::scope(|s| {
                s.spawn(|| q.acquire_blocking(1, None));
                wait_until(|| q.inspect().unwrap().waiters == 1);
                say("ready");
                std::thread::sleep(Duration::from_secs(600));
            });
            drop((held, q_held));
        }
        Setup::Plain | Setup::Crowded => {}
    }
    std::thread::sleep(Duration::from_secs(600));
}

/// Goes through every operation of the protocol; says "recovered" once it has used `m`
/// (repairing what a ghost left there).
fn victim(scope: &HostScope, setup: Setup) {
    if setup == Setup::GhostDiesLater {
        say("opened");
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).unwrap();
    }
    let (m, rw, sem) = (open(scope, "m", 1), open(scope, "rw", RWLOCK_CAPACITY), open(scope, "sem", 3));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    // The fast path (bystanders may hold it: then it fails, which is a path too).
    if let Some(lease) = m.try_acquire(1).unwrap() {
        m.release(lease).unwrap();
    }
    if setup == Setup::GhostInTableLock {
        drop(open(scope, "cap", 1)); // the first table lock: taken over from the ghost
    }
    say("recovered");
    std::thread::scope(|s| {
        let held = m.acquire_blocking(1, None).unwrap();
        // A blocking request that times out, and an async one that is cancelled.
        let timed_out = s.spawn(|| m.acquire_blocking(1, Some(Instant::now() + Duration::from_millis(2))));
        assert_eq!(timed_out.join().unwrap().unwrap_err().kind(), ErrorKind::Timeout);
        let cancelled =
            runtime.block_on(async { tokio::time::timeout(Duration::from_millis(2), m.acquire(1, None)).await });
        assert!(cancelled.is_err(), "the async request waited and was cancelled");
        // A request granted when the holder releases: a release with a waiter.
        let waiter = s.spawn(|| {
            let lease = m.acquire_blocking(1, None).unwrap();
            m.release(lease).unwrap();
        });
        wait_until(|| m.inspect().unwrap().waiters >= 1);
        m.release(held).unwrap();
        waiter.join().unwrap();
        // A cede to a waiting request, blocking and async.
        let held = m.acquire_blocking(1, None).unwrap();
        let waiter = s.spawn(|| {
            let lease = m.acquire_blocking(1, None).unwrap();
            m.release(lease).unwrap();
        });
        wait_until(|| m.inspect().unwrap().waiters >= 1);
        let held = m.as_cede().expect("the host scope cedes").cede_blocking(held).unwrap();
        m.release(held).unwrap(); // (a bystander may have queued first: the waiter may be behind)
        waiter.join().unwrap();
        let held = m.acquire_blocking(1, None).unwrap();
        let waiter = s.spawn(|| {
            let lease = m.acquire_blocking(1, None).unwrap();
            m.release(lease).unwrap();
        });
        wait_until(|| m.inspect().unwrap().waiters >= 1);
        let held = runtime.block_on(m.as_cede().expect("the host scope cedes").cede(held)).unwrap();
        m.release(held).unwrap();
        waiter.join().unwrap();
        // An async request granted on a release.
        let held = m.acquire_blocking(1, None).unwrap();
        let granted = s.spawn(|| {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
            let lease = runtime.block_on(m.acquire(1, None)).unwrap();
            m.release(lease).unwrap();
        });
        wait_until(|| m.inspect().unwrap().waiters >= 1);
        m.release(held).unwrap();
        granted.join().unwrap();
        // Readers (two at once) and a writer; a semaphore request that waits for permits.
        let other = rw.acquire_blocking(1, None).unwrap();
        let read = rw.acquire_blocking(1, None).unwrap();
        rw.release(other).unwrap();
        let writer = s.spawn(|| {
            let lease = rw.acquire_blocking(RWLOCK_CAPACITY, None).unwrap();
            rw.release(lease).unwrap();
        });
        wait_until(|| rw.inspect().unwrap().waiters >= 1);
        rw.release(read).unwrap();
        writer.join().unwrap();
        let two = sem.acquire_blocking(2, None).unwrap();
        let more = s.spawn(|| {
            let lease = sem.acquire_blocking(2, None).unwrap();
            sem.release(lease).unwrap();
        });
        wait_until(|| sem.inspect().unwrap().waiters >= 1);
        sem.release(two).unwrap();
        more.join().unwrap();
    });
    // A capacity change: "cap" opened as a mutex, closed, opened as a semaphore of 5.
    drop(open(scope, "cap", 1));
    let cap = open(scope, "cap", 5);
    drop(cap.acquire_blocking(5, None).map(|lease| cap.release(lease)));
    drop(cap);
    // Many handles at once: the arena grows.
    let many: Vec<_> = (0..MANY).map(|i| open(scope, &format!("many/{i}"), 1)).collect();
    drop(many);
    // Many names made and closed: the table grows, then sweeps.
    for name in churned() {
        drop(open(scope, &name, 1));
    }
    say("done");
}

/// Uses `m`, `rw` and `sem` for a while, then prints the highest token it saw of each.
fn bystander(scope: &HostScope) {
    let (m, rw, sem) = (open(scope, "m", 1), open(scope, "rw", RWLOCK_CAPACITY), open(scope, "sem", 3));
    let patience = || Some(Instant::now() + Duration::from_secs(15));
    let mut tokens = [0u64; 3];
    let seed: u64 = std::env::var("BYSTANDER").unwrap().parse().unwrap();
    for i in 0..200u64 {
        let (lock, permits, slot) = match (i + seed) % 4 {
            0 | 1 => (&m, 1, 0),
            2 => (&rw, if i % 8 == 2 { RWLOCK_CAPACITY } else { 1 }, 1),
            _ => (&sem, 1 + (i % 2) as u32, 2),
        };
        let lease = match lock.acquire_blocking(permits, patience()) {
            Ok(lease) => lease,
            Err(e) => panic!(
                "a waiter is stuck: {e}; the lock: {:?}; entries of others: {:?}",
                lock.inspect(),
                scope.entries_of_others()
            ),
        };
        tokens[slot] = tokens[slot].max(lease.token());
        if i % 3 == 0 {
            std::thread::sleep(Duration::from_micros(100));
        }
        lock.release(lease).unwrap();
    }
    say(&format!("tokens {} {} {}", tokens[0], tokens[1], tokens[2]));
}

fn wait_until(mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < Duration::from_secs(30), "gave up waiting");
        std::thread::yield_now();
    }
}
