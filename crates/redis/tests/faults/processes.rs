//! A holder in a process of its own, SIGKILLed.

use std::sync::mpsc;
use std::time::Instant;

use latchkey::Scope;
use latchkey_testkit::worker::{wait_until, Worker, PATIENCE};
use latchkey_testkit::RedisServer;

/// Issue 12: a holder process killed with SIGKILL loses its lock when its session lapses
/// (a TTL after its last renewal): a waiter queued before the kill is granted then, with a
/// greater token; it looks again when the holder's session would lapse, not by polling.
#[test]
fn a_sigkilled_holder_is_followed_once_its_session_lapses() {
    let server = RedisServer::start();
    let url = server.url("ttl=2s&prefix=kill");
    let mut worker = Worker::spawn(&["hold", &url, "job"]);
    let line = worker.line("held");
    let killed_token: u64 = line.strip_prefix("held ").and_then(|t| t.parse().ok()).expect("held TOKEN");

    let scope = Scope::open(&url).unwrap();
    let (granted_tx, granted) = mpsc::channel();
    let waiter = scope.clone();
    std::thread::spawn(move || {
        let guard = waiter.lock_blocking_timeout("job", PATIENCE);
        let _ = granted_tx.send((Instant::now(), guard));
    });
    wait_until("the waiter queues", || scope.inspect("job").unwrap().waiters == 1);
    let killed = Instant::now();
    worker.kill();
    let (at, guard) = granted.recv_timeout(PATIENCE).expect("the waiter is granted");
    let guard = guard.expect("the waiter's lock");
    println!("SIGKILL to grant: {:?} (TTL 2 s)", at - killed);
    assert!(guard.fencing_token() > killed_token);
    guard.release().unwrap();
}
