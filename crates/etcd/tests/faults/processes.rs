//! Holders in processes of their own, killed (SIGKILL) or stopped (SIGSTOP) past their TTL.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use latchkey::Scope;
use latchkey_testkit::EtcdCluster;

use crate::fenced::{Etcd, Fence, Write};
use crate::support::{wait_until, Worker, PATIENCE};

/// The session TTL of these tests.
const TTL: Duration = Duration::from_secs(2);

fn token_of(line: &str) -> u64 {
    line.strip_prefix("held ").and_then(|t| t.parse().ok()).unwrap_or_else(|| panic!("not `held TOKEN`: {line}"))
}

/// Issue 10: a holder process killed with SIGKILL loses its lock when its session's lease
/// expires: a waiter (queued before the kill) is granted within TTL + 1 s of the kill, with
/// a greater token.
#[test]
fn a_sigkilled_holder_is_followed_within_its_ttl() {
    let cluster = EtcdCluster::start(1);
    let url = cluster.url_with("kill", "ttl=2s");
    let mut worker = Worker::spawn(&["hold", &url, "job"]);
    let killed_token = token_of(&worker.line("held"));

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
    let waited = at - killed;
    println!("SIGKILL to grant: {waited:?} (TTL {TTL:?})");
    assert!(guard.fencing_token() > killed_token, "token {} after {killed_token}", guard.fencing_token());
    assert!(waited <= TTL + Duration::from_secs(1), "granted {waited:?} after the kill; the TTL is {TTL:?}");
    guard.release().unwrap();
}

/// Issue 10: a holder stopped (SIGSTOP) past its TTL, whose lock went to another holder
/// that wrote the fenced resource, sees on SIGCONT that its hold is lost (`is_lost()`,
/// `lost()`) before it acts again: at most one write that was under way at the stop, and
/// that one cannot override the new holder's (the resource keeps the new holder's write).
#[test]
fn a_holder_stopped_past_its_ttl_sees_the_loss_before_it_acts() {
    let cluster = EtcdCluster::start(1);
    let url = cluster.url_with("stop", "ttl=2s");
    let etcd = Etcd::connect(&cluster.endpoints());
    let fence = Fence::new("stop-fence");
    fence.init(&etcd);
    let mut worker = Worker::spawn(&["act", &url, "job", &cluster.endpoints().join(","), "stop-fence"]);
    let stopped_token = token_of(&worker.line("held"));
    assert_eq!(worker.line("a first write"), "wrote 0");

    worker.stop();
    let stopped = Instant::now();
    let scope = Scope::open(&url).unwrap();
    let guard = scope.lock_blocking_timeout("job", PATIENCE).expect("the lock of the stopped holder");
    let token = guard.fencing_token();
    println!("SIGSTOP to grant: {:?} (TTL {TTL:?})", stopped.elapsed());
    assert!(token > stopped_token, "token {token} after {stopped_token}");
    assert_eq!(etcd.run(|client| fence.rewrite(client, token, "new holder")), Write::Accepted);
    // Everything the worker said before the stop has been read by now (the grant took
    // at least the rest of its TTL).
    let before = worker.lines_so_far();
    assert!(before.iter().all(|l| l.starts_with("wrote")), "before the stop: {before:?}");

    let resumed = Instant::now();
    worker.signal(libc::SIGCONT);
    let (mut after, mut lost_future) = (Vec::new(), None);
    while !(after.iter().any(|l: &String| l.starts_with("lost ")) && lost_future.is_some()) {
        let line = worker.line("`lost N` and `lost-future` after SIGCONT");
        if line == "lost-future" {
            lost_future = Some(resumed.elapsed());
        } else {
            after.push(line);
        }
    }
    println!("after SIGCONT: {after:?}; lost() completed {lost_future:?} after SIGCONT");
    let acts = &after[..after.len() - 1];
    assert!(after.last().unwrap().starts_with("lost "), "the worker went on after it saw the loss: {after:?}");
    assert!(acts.len() <= 1, "the worker acted {} times after SIGCONT before it saw the loss: {after:?}", acts.len());
    assert_eq!(etcd.run(|client| fence.value(client)), "new holder", "a stale write overrode the new holder's");
    worker.finish();
    guard.release().unwrap();
}
