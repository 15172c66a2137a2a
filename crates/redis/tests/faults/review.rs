//! What an adversarial review of the Redis scope found, each shown failing before its fix:
//! answers lost after the script ran (`DEBUG SLEEP` past the response timeout),
//! a lost session's requests, `list` under a prefix with glob characters, a server that may
//! evict keys.

use std::time::{Duration, Instant};

use latchkey::{ErrorKind, Scope};
use latchkey_testkit::worker::PATIENCE;
use latchkey_testkit::RedisServer;

/// Stalls the server for `ms` (`DEBUG SLEEP`, from a thread of its own), from about 100 ms
/// after the call: what the scope sends meanwhile runs after the stall, past its response
/// timeout (a third of the TTL, at least 0.5 s), and its answer is lost.
fn stall(server: &RedisServer, ms: u64) -> std::thread::JoinHandle<()> {
    let (port, seconds) = (server.port().to_string(), format!("{}", ms as f64 / 1000.0));
    let stalled = std::thread::spawn(move || {
        let status = std::process::Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &port, "DEBUG", "SLEEP", &seconds])
            .stdout(std::process::Stdio::null())
            .status()
            .expect("run redis-cli");
        assert!(status.success(), "DEBUG SLEEP failed");
    });
    std::thread::sleep(Duration::from_millis(100));
    stalled
}

/// Polls `done` every 50 ms until it holds, at most `PATIENCE`.
#[track_caller]
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < PATIENCE, "{what}: not within {PATIENCE:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Review finding 1: a second request on a held name whose answer was lost (a timeout
/// while the server was paused) was withdrawn, and took the name out of the keep-alive's
/// renewals with it: the first hold lapsed on the server while its guard still said held,
/// and another scope was granted the lock.
#[test]
fn a_request_whose_answer_is_lost_leaves_the_held_one_renewed() {
    let server = RedisServer::start();
    let url = server.url("ttl=3s&prefix=lostanswer");
    let scope = Scope::open(&url).unwrap();
    let held = scope.lock_blocking_timeout("a", PATIENCE).unwrap();
    let stalled = stall(&server, 1500);
    let second = scope.lock_blocking_timeout("a", Duration::from_millis(300));
    assert!(second.is_err(), "a second lock of a held mutex");
    stalled.join().unwrap();
    // Past more than a TTL after the stall (whose enqueue renewed the mark).
    std::thread::sleep(Duration::from_secs(5));
    let other = Scope::open(&url).unwrap();
    let taken = other.try_lock("a").unwrap();
    assert!(held.is_lost() || taken.is_none(), "another scope took the lock while its holder's guard says it holds it");
    assert!(!held.is_lost(), "the hold was lost, though its session kept renewing");
    held.release().unwrap();
    assert!(other.try_lock("a").unwrap().is_some(), "free after the release");
}

/// Review finding 2: a cede whose answer was lost withdrew the request where it was, not
/// where the script had moved it: the moved request stayed queued (and renewed) for good,
/// and the lock was never free again.
#[test]
fn a_cede_whose_answer_is_lost_leaves_no_request_behind() {
    let server = RedisServer::start();
    let url = server.url("ttl=3s&prefix=lostcede");
    let (scope, other) = (Scope::open(&url).unwrap(), Scope::open(&url).unwrap());
    let interval = scope.interval_lock("i", Duration::from_millis(1)).unwrap();
    let guard = interval.lock_blocking_timeout(PATIENCE).unwrap();
    let waiter = std::thread::spawn(move || {
        let theirs = other.interval_lock("i", Duration::from_millis(1)).unwrap();
        let granted = theirs.lock_blocking_timeout(PATIENCE * 2).map(|g| g.release());
        drop(theirs);
        (granted.is_ok(), other)
    });
    wait_until("the other scope waits", || scope.inspect("i").unwrap().waiters == 1);
    let stalled = stall(&server, 1500);
    let ceded = guard.cede_blocking();
    assert!(ceded.is_err(), "a cede past the response timeout answered");
    stalled.join().unwrap();
    let (granted, _other) = waiter.join().unwrap();
    assert!(granted, "the waiter was granted after the cede");
    let third = Scope::open(&url).unwrap();
    wait_until("the lock is free again", || third.try_lock("i").unwrap().is_some());
}

/// Review finding 5: a session lost on one name (its marks there deleted) kept its holds on
/// the others until they lapsed by themselves, a whole TTL for nothing: they are given back
/// once the loss is known.
#[test]
fn a_lost_session_gives_its_other_holds_back() {
    let server = RedisServer::start();
    let url = server.url("ttl=30s&prefix=giveback");
    let scope = Scope::open(&url).unwrap();
    let (a, b) =
        (scope.lock_blocking_timeout("a", PATIENCE).unwrap(), scope.lock_blocking_timeout("b", PATIENCE).unwrap());
    let marks = latchkey_redis::keys::NameKeys::new("giveback", "b").sessions;
    server.cli(&["DEL", &marks]);
    // The next renewal (a third of the TTL) finds the session lapsed on `b`.
    latchkey_model::block_on_until(a.lost(), Some(Instant::now() + Duration::from_secs(15))).expect("lost() fires");
    assert!(b.is_lost());
    let other = Scope::open(&url).unwrap();
    // Without the give-back, `a` stays held for the rest of its 30-s mark (20 s or more).
    let start = Instant::now();
    while other.try_lock("a").unwrap().is_none() {
        assert!(start.elapsed() < Duration::from_secs(10), "`a` was not given back");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Review finding 10: `list` matched keys with the prefix as a glob pattern: under a prefix
/// with `[` and `]` it listed another prefix's names and missed its own.
#[test]
fn list_takes_the_prefix_literally() {
    let server = RedisServer::start();
    let (bracketed, plain) = (
        Scope::open(&server.url("ttl=5s&prefix=x[1]")).unwrap(),
        Scope::open(&server.url("ttl=5s&prefix=x1")).unwrap(),
    );
    let _mine = bracketed.lock_blocking_timeout("mine", PATIENCE).unwrap();
    let _theirs = plain.lock_blocking_timeout("theirs", PATIENCE).unwrap();
    let names: Vec<String> = bracketed.list().unwrap().iter().map(|state| state.name.to_string()).collect();
    assert_eq!(names, ["mine"]);
}

/// Review finding 4: a server that may evict keys would let a lock's keys go and two
/// holders hold it: the scope refuses it, saying what to set.
#[test]
fn a_server_that_may_evict_keys_is_refused() {
    let server = RedisServer::start();
    server.cli(&["CONFIG", "SET", "maxmemory", "100mb"]);
    server.cli(&["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"]);
    let error = Scope::open(&server.url("ttl=5s")).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Unsupported, "{error}");
    assert!(error.to_string().contains("maxmemory-policy noeviction"), "{error}");
    server.cli(&["CONFIG", "SET", "maxmemory-policy", "noeviction"]);
    Scope::open(&server.url("ttl=5s")).expect("a server that evicts nothing");
}

/// Second review: a blocking lock on the caller's thread waited for its answer as long as
/// the scope's response timeout (a third of the TTL), whatever its own deadline. Now the
/// first trip may take the deadline plus a quarter of a second, as on the scope's thread.
#[test]
fn a_blocking_lock_keeps_its_deadline_on_a_stalled_server() {
    let server = RedisServer::start();
    let scope = Scope::open(&server.url("ttl=30s&prefix=deadline")).unwrap();
    // A connection of this thread's, kept for the next call.
    scope.lock_blocking_timeout("warm", PATIENCE).unwrap().release().unwrap();
    let stalled = stall(&server, 5000);
    let began = Instant::now();
    let locked = scope.lock_blocking_timeout("job", Duration::from_millis(100));
    let took = began.elapsed();
    stalled.join().unwrap();
    assert_eq!(locked.unwrap_err().kind(), ErrorKind::Timeout);
    assert!(took < Duration::from_secs(3), "a 100-ms lock took {took:?} on a server stalled for 5 s");
}
