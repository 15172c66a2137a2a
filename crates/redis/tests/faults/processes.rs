//! A holder in a process of its own, SIGKILLed.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use latchkey::Scope;
use latchkey_testkit::worker::{wait_until, Worker, PATIENCE};
use latchkey_testkit::RedisServer;

use crate::fenced::Fence;

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

/// Issue 12: a holder stopped (SIGSTOP) past its TTL: its session lapses, a waiter is
/// granted, and on SIGCONT the holder sees its loss before it acts again; the resource
/// refuses the old token after the new holder wrote.
#[test]
fn a_holder_stopped_past_its_ttl_sees_the_loss_before_it_acts() {
    let server = RedisServer::start();
    let resource = RedisServer::start();
    let url = server.url("ttl=2s&prefix=stop");
    let fence = Fence::connect(&resource.url(""), "stop");
    let mut worker = Worker::spawn(&["act", &url, "job", &resource.url(""), "stop"]);
    let line = worker.line("held");
    let old_token: u64 = line.strip_prefix("held ").and_then(|t| t.parse().ok()).expect("held TOKEN");
    assert!(worker.line("a first write").starts_with("wrote"));

    let scope = Scope::open(&url).unwrap();
    let (granted_tx, granted) = mpsc::channel();
    let waiter = scope.clone();
    std::thread::spawn(move || {
        let guard = waiter.lock_blocking_timeout("job", PATIENCE);
        let _ = granted_tx.send((Instant::now(), guard));
    });
    wait_until("the waiter queues", || scope.inspect("job").unwrap().waiters == 1);
    worker.stop();
    let stopped = Instant::now();
    let (at, guard) = granted.recv_timeout(PATIENCE).expect("the waiter is granted");
    let guard = guard.expect("the waiter's lock");
    println!("SIGSTOP to grant: {:?} (TTL 2 s)", at - stopped);
    assert!(at - stopped >= Duration::from_secs(1), "granted while the holder's session could still be alive");
    let new_token = guard.fencing_token();
    assert!(new_token > old_token);
    assert!(fence.write(new_token, 1000));
    let _ = worker.lines_so_far();
    worker.signal(libc::SIGCONT);
    let said = worker.rest();
    let writes_after = said.iter().filter(|line| line.starts_with("wrote")).count();
    assert!(writes_after <= 1, "the holder kept writing after its loss: {said:?}");
    assert!(said.iter().any(|line| line.starts_with("lost ")), "the holder saw its loss: {said:?}");
    assert_eq!(fence.value(), 1000, "an old holder's write overrode the new holder's: {said:?}");
    guard.release().unwrap();
}
