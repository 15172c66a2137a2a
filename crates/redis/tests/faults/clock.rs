//! A client whose clock is an hour off (libfaketime, preloaded into a worker process):
//! grants and expiry are the same, since every time the scope counts is the server's
//! (`TIME` in the scripts) or the client's monotonic clock (its session's validity).

use std::time::{Duration, Instant};

use latchkey::{ErrorKind, Scope};
use latchkey_testkit::worker::{wait_until, Worker, PATIENCE};
use latchkey_testkit::RedisServer;

/// libfaketime as Debian installs it.
const FAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// Issue 12: holders whose clocks are an hour ahead and an hour behind keep their locks
/// past twice their TTL while alive (a waiter times out), and lose them a TTL after they
/// die (the waiter is granted then), as a holder with a true clock does.
#[test]
fn a_client_clock_an_hour_off_changes_neither_grants_nor_expiry() {
    assert!(
        std::path::Path::new(FAKETIME).exists(),
        "the test needs libfaketime ({FAKETIME}): on Debian or Ubuntu, `apt-get install faketime`"
    );
    let server = RedisServer::start();
    let url = server.url("ttl=2s&prefix=clock");
    let scope = Scope::open(&url).unwrap();
    for offset in ["+1h", "-1h"] {
        let env = [("LD_PRELOAD", FAKETIME), ("FAKETIME", offset), ("FAKETIME_DONT_FAKE_MONOTONIC", "1")];
        let mut worker = Worker::spawn_with(&["hold", &url, "job"], &env);
        let held: u64 = worker.line("held").strip_prefix("held ").and_then(|t| t.parse().ok()).expect("held TOKEN");
        // The holder's clock is off indeed: it wrote when it asked, on its own clock.
        let since = scope.inspect("job").unwrap().holders[0].held_for.expect("held for");
        if offset == "-1h" {
            assert!(since > Duration::from_secs(50 * 60), "the holder's clock was not moved: held for {since:?}");
        }
        let waited = scope.lock_blocking_timeout("job", Duration::from_secs(4));
        assert_eq!(waited.map(|g| g.fencing_token()).map_err(|e| e.kind()), Err(ErrorKind::Timeout), "clock {offset}");
        let killed = Instant::now();
        worker.kill();
        let guard = scope.lock_blocking_timeout("job", PATIENCE).expect("granted after the holder died");
        println!("clock {offset}: SIGKILL to grant {:?} (TTL 2 s)", killed.elapsed());
        assert!(guard.fencing_token() > held);
        guard.release().unwrap();
        wait_until("the name is free", || !scope.is_locked("job").unwrap());
    }
}
