//! Holders in processes of their own: killed (SIGKILL), their sessions ended by the server
//! (`pg_terminate_backend`), or stopped (SIGSTOP) past their TTL.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use latchkey::Scope;
use latchkey_testkit::PostgresServer;

use crate::fenced::Fence;
use crate::support::{backend_of, url, wait_until, Worker, PATIENCE};

fn token_of(line: &str) -> u64 {
    line.strip_prefix("held ").and_then(|t| t.parse().ok()).unwrap_or_else(|| panic!("not `held TOKEN`: {line}"))
}

/// A thread of the test that waits for `name` in `scope`; the channel gets the time of the
/// grant and the guard.
fn waiter(scope: &Scope, name: &str) -> mpsc::Receiver<(Instant, latchkey::Result<latchkey::Guard<'static>>)> {
    let (granted_tx, granted) = mpsc::channel();
    let (scope, name) = (scope.clone(), name.to_string());
    std::thread::spawn(move || {
        let guard = scope.lock_blocking_timeout(&name, PATIENCE);
        let _ = granted_tx.send((Instant::now(), guard));
    });
    granted
}

/// Issue 11: a holder process killed with SIGKILL frees its lock with its session (the
/// server ends it when the connection closes): a waiter queued before the kill is granted,
/// with a greater token, once the keep-alive sees the session gone (every second while
/// someone waits behind it).
#[test]
fn a_sigkilled_holder_frees_its_lock_with_its_session() {
    let server = PostgresServer::start();
    let url = url(&server, "kill", "10s", "");
    let mut worker = Worker::spawn(&["hold", &url, "job"]);
    let killed_token = token_of(&worker.line("held"));

    let scope = Scope::open(&url).unwrap();
    let granted = waiter(&scope, "job");
    wait_until("the waiter queues", || scope.inspect("job").unwrap().waiters == 1);

    let killed = Instant::now();
    worker.kill();
    let (at, guard) = granted.recv_timeout(PATIENCE).expect("the waiter is granted");
    let guard = guard.expect("the waiter's lock");
    println!("SIGKILL to grant: {:?} (TTL 10 s; dead sessions are looked for every second)", at - killed);
    assert!(guard.fencing_token() > killed_token, "token {} after {killed_token}", guard.fencing_token());
    guard.release().unwrap();
}

/// Issue 11: `pg_terminate_backend` of the holder's session: the holder's `lost()` fires
/// and it stops acting, a waiter is granted, and the fenced resource rejects the old token
/// once the new holder has written.
#[test]
fn a_terminated_session_is_lost_and_its_token_fenced_off() {
    let server = PostgresServer::start();
    let holder_url = url(&server, "terminate", "10s", "application_name=holder");
    let fence_url = server.url("");
    let fence = Fence::connect(&fence_url, "terminate_fence");
    let mut worker = Worker::spawn(&["act", &holder_url, "job", &fence_url, "terminate_fence"]);
    let old_token = token_of(&worker.line("held"));
    assert!(worker.line("a first write").starts_with("wrote"), "the holder writes");

    let scope = Scope::open(&url(&server, "terminate", "10s", "")).unwrap();
    let granted = waiter(&scope, "job");
    wait_until("the waiter queues", || scope.inspect("job").unwrap().waiters == 1);

    let backend = backend_of(&server, "holder");
    let terminated = Instant::now();
    assert_eq!(server.psql(&format!("SELECT pg_terminate_backend({backend})")), "t");
    // The holder's loop may see the loss (`lost N`) before or after its lost() future
    // reports (`lost-future`): keep every line.
    let mut said = Vec::new();
    let lost_after = loop {
        let line = worker.line("lost-future");
        said.push(line.clone());
        if line == "lost-future" {
            break terminated.elapsed();
        }
    };
    println!("pg_terminate_backend to lost(): {lost_after:?}");
    assert!(lost_after < Duration::from_secs(5), "lost() fired {lost_after:?} after the session ended");
    said.extend(worker.rest());
    assert!(said.iter().any(|line| line.starts_with("lost ")), "the holder saw its loss: {said:?}");

    let (at, guard) = granted.recv_timeout(PATIENCE).expect("the waiter is granted");
    let guard = guard.expect("the waiter's lock");
    println!("pg_terminate_backend to grant: {:?}", at - terminated);
    let new_token = guard.fencing_token();
    assert!(new_token > old_token, "token {new_token} after {old_token}");
    assert!(fence.write(new_token, 1000), "the new holder writes");
    assert!(!fence.write(old_token, 1), "the fenced resource took the old token after the new one");
    assert_eq!(fence.value(), 1000);
    guard.release().unwrap();
}

/// A holder stopped (SIGSTOP) past its TTL sends no keep-alive: the server ends its idle
/// session after the TTL (`idle_session_timeout`), a waiter is granted, and on SIGCONT the
/// holder sees its loss before it acts again; the resource keeps the new holder's write.
#[test]
fn a_holder_stopped_past_its_ttl_sees_the_loss_before_it_acts() {
    let server = PostgresServer::start();
    let holder_url = url(&server, "stop", "2s", "");
    let fence_url = server.url("");
    let fence = Fence::connect(&fence_url, "stop_fence");
    let mut worker = Worker::spawn(&["act", &holder_url, "job", &fence_url, "stop_fence"]);
    let old_token = token_of(&worker.line("held"));
    assert!(worker.line("a first write").starts_with("wrote"));

    let scope = Scope::open(&url(&server, "stop", "2s", "")).unwrap();
    let granted = waiter(&scope, "job");
    wait_until("the waiter queues", || scope.inspect("job").unwrap().waiters == 1);
    worker.stop();
    let stopped = Instant::now();
    let (at, guard) = granted.recv_timeout(PATIENCE).expect("the waiter is granted");
    let guard = guard.expect("the waiter's lock");
    println!("SIGSTOP to grant: {:?} (TTL 2 s)", at - stopped);
    assert!(at - stopped >= Duration::from_secs(1), "granted while the holder's session could still be alive");
    let new_token = guard.fencing_token();
    assert!(fence.write(new_token, 1000));
    let _ = worker.lines_so_far();
    worker.signal(libc::SIGCONT);
    let said = worker.rest();
    // At most the write that was under way at the stop, and the resource refuses it.
    let writes_after = said.iter().filter(|line| line.starts_with("wrote")).count();
    assert!(writes_after <= 1, "the holder kept writing after its loss: {said:?}");
    assert!(said.iter().any(|line| line.starts_with("lost ")), "the holder saw its loss: {said:?}");
    assert_eq!(fence.value(), 1000, "an old holder's write overrode the new holder's: {said:?}");
    assert!(old_token < new_token);
    guard.release().unwrap();
}
