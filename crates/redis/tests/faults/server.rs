//! The server's side: the scope's connection killed, the server restarted empty.

use std::time::{Duration, Instant};

use latchkey::{ErrorKind, Scope};
use latchkey_testkit::worker::PATIENCE;
use latchkey_testkit::RedisServer;

/// Issue 12: `CLIENT KILL` of the scope's connections: the scope reconnects and keeps its
/// holds (its session did not lapse): `lost()` does not fire, `check` says held, another
/// client still cannot take the lock, and the release works.
#[test]
fn a_killed_connection_keeps_the_holds() {
    let server = RedisServer::start();
    let url = server.url("ttl=2s&prefix=killed");
    let scope = Scope::open(&url).unwrap();
    let guard = scope.lock_blocking_timeout("job", PATIENCE).unwrap();
    let killed: u64 = server.cli(&["CLIENT", "KILL", "TYPE", "normal"]).parse().unwrap();
    assert!(killed >= 1, "the scope's connections were killed: {killed}");
    // Past more than a TTL, with renewals through the new connection.
    std::thread::sleep(Duration::from_millis(2500));
    assert!(!guard.is_lost(), "a killed connection lost the hold");
    guard.check().expect("still held");
    let other = Scope::open(&url).unwrap();
    assert!(other.try_lock("job").unwrap().is_none(), "another client took a held lock");
    guard.release().unwrap();
    assert!(other.try_lock("job").unwrap().is_some());
}

/// Issue 12: a restart of a server without persistence: every guard reports its loss (its
/// session's marks are gone), and tokens keep increasing after the restart.
#[test]
fn a_restart_without_persistence_loses_every_hold_and_tokens_keep_increasing() {
    let mut server = RedisServer::start();
    let url = server.url("ttl=2s&prefix=restart");
    let scope = Scope::open(&url).unwrap();
    let guard = scope.lock_blocking_timeout("job", PATIENCE).unwrap();
    let before = guard.fencing_token();
    server.restart();
    latchkey_model::block_on_until(guard.lost(), Some(Instant::now() + PATIENCE)).expect("lost() fires");
    assert!(guard.is_lost());
    assert_eq!(guard.release().unwrap_err().kind(), ErrorKind::HandleLost);
    let again = scope.lock_blocking_timeout("job", PATIENCE).expect("the lock after the restart");
    assert!(again.fencing_token() > before, "token {} after {before}", again.fencing_token());
    again.release().unwrap();
}

/// The blocking calls run on connections of the caller's thread, kept idle between calls:
/// one killed while idle (`CLIENT KILL`) is noticed on its next use and the call is made
/// again on the scope's thread, without an error and without leaving a request behind.
#[test]
fn a_blocking_call_on_a_connection_killed_while_idle_goes_through() {
    let server = RedisServer::start();
    let url = server.url("ttl=5s&prefix=idlekilled");
    let scope = Scope::open(&url).unwrap();
    for round in 0..3 {
        let guard = scope.lock_blocking_timeout("job", PATIENCE).unwrap();
        server.cli(&["CLIENT", "KILL", "TYPE", "normal"]);
        // The scope's own connection notices with the next renewal; give it that long.
        std::thread::sleep(Duration::from_millis(2000));
        guard.release().unwrap_or_else(|e| panic!("round {round}: the release: {e}"));
        server.cli(&["CLIENT", "KILL", "TYPE", "normal"]);
        std::thread::sleep(Duration::from_millis(2000));
        let again = scope.try_lock("job").unwrap_or_else(|e| panic!("round {round}: the try: {e}"));
        assert!(again.is_some(), "round {round}: the lock is free");
        drop(again);
    }
    let state = scope.inspect("job").unwrap();
    assert_eq!((state.holders.len(), state.waiters), (0, 0));
}
