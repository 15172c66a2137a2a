//! The server restarted while locks are held and awaited: killed outright (crash
//! recovery runs, which empties latchkey's unlogged tables), or stopped and started as an
//! administrator would (they keep their rows, of sessions now dead).

use std::sync::mpsc;
use std::time::Duration;

use latchkey::{ErrorKind, Scope};
use latchkey_testkit::PostgresServer;

use crate::support::{rows, url, wait_until, PATIENCE};

/// Holds `m` and 2 of the semaphore `s` in one scope, and waits for `m` in another; then
/// `restart`s the server. Every guard reports its loss, the waiter fails rather than being
/// granted, and the next grants of both names carry greater tokens.
fn held_and_awaited_across(restart: impl FnOnce(&mut PostgresServer)) -> (u64, u64) {
    let mut server = PostgresServer::start();
    let url = url(&server, "restart", "10s", "");
    let holder = Scope::open(&url).unwrap();
    let m = holder.lock_blocking_timeout("m", PATIENCE).unwrap();
    let semaphore = holder.semaphore("s", 3).unwrap();
    let s = semaphore.acquire_blocking(2).unwrap();
    let (m_token, s_token) = (m.fencing_token(), s.fencing_token());

    let waiting = Scope::open(&url).unwrap();
    let (done_tx, done) = mpsc::channel();
    let waiter = waiting.clone();
    std::thread::spawn(move || {
        let _ = done_tx.send(waiter.lock_blocking_timeout("m", PATIENCE).map(|g| g.fencing_token()));
    });
    wait_until("the waiter queues", || holder.inspect("m").unwrap().waiters == 1);

    restart(&mut server);

    for (what, guard) in [("the mutex", &m), ("the semaphore", &s)] {
        latchkey_model::block_on_until(guard.lost(), Some(std::time::Instant::now() + PATIENCE))
            .unwrap_or_else(|| panic!("{what}'s lost() did not fire"));
        assert!(guard.is_lost(), "{what} is not lost");
    }
    let waited = done.recv_timeout(PATIENCE).expect("the waiter ends");
    assert_eq!(waited.map_err(|e| e.kind()), Err(ErrorKind::HandleLost), "the waiter was granted across the restart");
    assert_eq!(m.release().unwrap_err().kind(), ErrorKind::HandleLost);
    assert_eq!(s.release().unwrap_err().kind(), ErrorKind::HandleLost);

    // The scopes carry on with new sessions; nothing is held, and tokens went up.
    let m_again = waiting.lock_blocking_timeout("m", Duration::from_secs(5)).expect("m after the restart");
    let s_again = semaphore.acquire_blocking(3).expect("all of s after the restart");
    assert!(m_again.fencing_token() > m_token, "m: token {} after {m_token}", m_again.fencing_token());
    assert!(s_again.fencing_token() > s_token, "s: token {} after {s_token}", s_again.fencing_token());
    let tokens = (m_again.fencing_token(), s_again.fencing_token());
    drop((m_again, s_again));
    holder.close_blocking().unwrap();
    waiting.close_blocking().unwrap();
    wait_until("the requests are gone", || rows(&server, "restart") == 0);
    tokens
}

/// Issue 11: a crash of the server (SIGKILL; crash recovery empties the unlogged queues):
/// tokens go on from a new epoch, above every token before.
#[test]
fn a_crashed_server_ends_every_hold_and_tokens_keep_increasing() {
    let (m, _) = held_and_awaited_across(PostgresServer::restart);
    assert!(m > 1 << 32, "a crash starts a new epoch of tokens: {m}");
}

/// Issue 11: a clean restart (fast shutdown): the queues keep the rows of the dead
/// sessions, which the next requests step over and delete.
#[test]
fn a_cleanly_restarted_server_ends_every_hold_and_tokens_keep_increasing() {
    let (m, _) = held_and_awaited_across(PostgresServer::restart_clean);
    assert!(m < 1 << 32, "a clean restart keeps the epoch: {m}");
}
