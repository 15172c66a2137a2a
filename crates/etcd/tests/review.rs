//! Adversarial review of the etcd scope: each test fails because of one bug found in
//! review (see the report). They use the scope contract directly (`RawScope`/`RawLock`),
//! which is exactly what `latchkey`'s guards call.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use etcd_client::{Client, GetOptions};
use latchkey_etcd::EtcdScope;
use latchkey_model::{block_on_until, ErrorKind, RawScope};
use latchkey_testkit::EtcdCluster;

fn block<F: std::future::Future>(future: F) -> F::Output {
    block_on_until(future, None).expect("no deadline")
}

/// The keys under `prefix`, read with a raw client.
fn keys_under(cluster: &EtcdCluster, prefix: &str) -> Vec<(String, i64)> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let mut client = Client::connect(cluster.endpoints(), None).await.unwrap();
        let answer = client.get(prefix, Some(GetOptions::new().with_prefix())).await.unwrap();
        answer.kvs().iter().map(|kv| (String::from_utf8_lossy(kv.key()).into_owned(), kv.lease())).collect()
    })
}

/// A guard dropped while the client is cut off: its release (in the background) fails
/// after a few seconds, and the key is never deleted afterwards. Since the session
/// survives the short cut (TTL 30 s) and is kept alive after the heal, the request key
/// stays for the whole life of the process: nobody else can ever take the lock.
#[test]
fn a_release_that_fails_during_a_short_cut_leaves_the_lock_held_forever() {
    let cluster = EtcdCluster::start(1);
    let (url, proxies) = cluster.proxied_url("r1");
    let cut_off = EtcdScope::open(&format!("{url}?ttl=30s")).unwrap();
    let other = EtcdScope::open(&cluster.url_with("r1", "ttl=30s")).unwrap();
    let lock = cut_off.open("n", 1).unwrap();
    let lease = lock.try_acquire(1).unwrap().expect("free");

    proxies.iter().for_each(|p| p.cut());
    lock.release_in_background(lease); // what dropping the guard does
    std::thread::sleep(Duration::from_secs(8)); // the background delete gives up after ~5 s
    proxies.iter().for_each(|p| p.heal());

    // Well within the cut-off scope's session (30 s), which is still alive.
    let theirs = other.open("n", 1).unwrap();
    let began = Instant::now();
    let mut granted = None;
    while began.elapsed() < Duration::from_secs(10) {
        if let Some(lease) = theirs.try_acquire(1).unwrap() {
            granted = Some(lease);
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let left = keys_under(&cluster, "r1/");
    assert!(
        granted.is_some(),
        "10 s after the heal the released lock is still held by the dropped guard's key, on the \
         cut-off scope's live session lease: {left:?}"
    );
    drop(cut_off);
}

/// A waiter (no deadline) fails with `Unavailable` on a cut of a few seconds, far shorter
/// than the TTL, although its session and its request survive it: a broken watch is
/// followed by one read that gives up after 5 s, and that error ends the wait. (Its
/// withdrawal then runs into the same cut, see the test above.)
#[test]
fn a_waiter_fails_on_a_cut_far_shorter_than_the_ttl() {
    let cluster = EtcdCluster::start(1);
    let (url, proxies) = cluster.proxied_url("r2");
    let cut_off = EtcdScope::open(&format!("{url}?ttl=30s")).unwrap();
    let other = EtcdScope::open(&cluster.url_with("r2", "ttl=30s")).unwrap();
    let holder = other.open("n", 1).unwrap();
    let held = holder.try_acquire(1).unwrap().expect("free");

    let waiter = cut_off.open("n", 1).unwrap();
    let (tx, rx) = mpsc::channel();
    let waiting = waiter.clone();
    std::thread::spawn(move || {
        let _ = tx.send(waiting.acquire_blocking(1, None).map(|lease| lease.token()));
    });
    std::thread::sleep(Duration::from_secs(1)); // queued and watching
    proxies.iter().for_each(|p| {
        p.cut();
        p.drop_connections();
    });
    std::thread::sleep(Duration::from_secs(12));
    proxies.iter().for_each(|p| p.heal());
    let outcome = rx.recv_timeout(Duration::from_millis(100));

    // The session never lapsed (30 s TTL, 12 s cut): the waiter should still be waiting.
    holder.release(held).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let after = other.open("n", 1).unwrap();
    let state = after.inspect().unwrap();
    let outcome_now = rx.try_recv();
    assert!(
        outcome.is_err(),
        "a 12 s cut under a 30 s TTL failed a waiting acquire: {outcome:?}; queue after the holder \
         released: {} holder(s) {:?}, then the waiter got {outcome_now:?}",
        state.holders.len(),
        keys_under(&cluster, "r2/"),
    );
}

/// `acquire` with a 1 s deadline, while the client is cut off: the deadline bounds only
/// the wait in the queue, not the enqueue, which retries for as long as the session is
/// valid (up to the TTL, 30 s here).
#[test]
fn an_acquire_deadline_is_not_honoured_while_the_client_is_cut_off() {
    let cluster = EtcdCluster::start(1);
    let (url, proxies) = cluster.proxied_url("r3");
    let scope = EtcdScope::open(&format!("{url}?ttl=30s")).unwrap();
    let lock = scope.open("n", 1).unwrap();
    proxies.iter().for_each(|p| p.cut());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let began = Instant::now();
        let outcome = lock.acquire_blocking(1, Some(Instant::now() + Duration::from_secs(1)));
        let _ = tx.send((outcome.map(|l| l.token()), began.elapsed()));
    });
    let answer = rx.recv_timeout(Duration::from_secs(6));
    if matches!(&answer, Ok((Err(e), _)) if e.kind() == ErrorKind::Timeout) {
        return;
    }
    let late = answer.ok().or_else(|| rx.recv_timeout(Duration::from_secs(40)).ok());
    panic!("an acquire with a 1 s deadline had not returned Timeout after 6 s; it returned {late:?}");
}

/// `lost()` must never complete while the hold is intact. A cut of a few seconds (well
/// within the 30 s TTL) makes the key watcher of `lost()` fail (stream broken, then a read
/// that gives up after 5 s), and `lost()` completes, while `is_lost()` is false and
/// `check()` is `Ok` after the heal: the hold was never lost.
#[test]
fn lost_fires_on_a_short_cut_although_the_hold_is_intact() {
    let cluster = EtcdCluster::start(1);
    let (url, proxies) = cluster.proxied_url("r4");
    let scope = EtcdScope::open(&format!("{url}?ttl=30s")).unwrap();
    let lock = scope.open("n", 1).unwrap();
    let lease = lock.try_acquire(1).unwrap().expect("free");
    let fired = Arc::new(AtomicBool::new(false));
    let lost = lock.lost(&lease);
    {
        let fired = fired.clone();
        std::thread::spawn(move || {
            block(lost);
            fired.store(true, Ordering::SeqCst);
        });
    }
    std::thread::sleep(Duration::from_millis(500));
    proxies.iter().for_each(|p| {
        p.cut();
        p.drop_connections();
    });
    std::thread::sleep(Duration::from_secs(9));
    let is_lost = lock.is_lost(&lease);
    proxies.iter().for_each(|p| p.heal());
    std::thread::sleep(Duration::from_secs(2));
    let check = lock.check(&lease);
    assert!(
        !fired.load(Ordering::SeqCst),
        "lost() completed during a 9 s cut under a 30 s TTL, yet is_lost() = {is_lost} and after \
         the heal check() = {check:?}"
    );
}

/// The session's lease revoked on the server (an operator, or etcd losing it): the next
/// request of an idle scope fails with `HandleLost` ("the session's lease expired") instead
/// of starting a new session; nothing was held, so nothing was lost.
#[test]
fn a_request_after_the_session_was_revoked_fails_with_handle_lost() {
    let cluster = EtcdCluster::start(1);
    let scope = EtcdScope::open(&cluster.url_with("r5", "ttl=30s")).unwrap();
    let lock = scope.open("n", 1).unwrap();
    let lease = lock.try_acquire(1).unwrap().expect("free");
    let session = keys_under(&cluster, "r5/")[0].1;
    lock.release(lease).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let mut client = Client::connect(cluster.endpoints(), None).await.unwrap();
        client.lease_revoke(session).await.unwrap();
    });
    let outcome = lock.try_acquire(1);
    assert!(matches!(outcome, Ok(Some(_))), "try_acquire on a free name after the session was revoked: {outcome:?}");
}

/// `close()`: "Operations after it fail with `Closed`". `inspect` and `list` still go to
/// the server and succeed.
#[test]
fn inspect_and_list_after_close_do_not_fail_with_closed() {
    let cluster = EtcdCluster::start(1);
    let scope = EtcdScope::open(&cluster.url_with("r6", "ttl=10s")).unwrap();
    let lock = scope.open("n", 1).unwrap();
    block(scope.close()).unwrap();
    let kinds = [
        ("scope.inspect", scope.inspect("n").err().map(|e| e.kind())),
        ("scope.list", scope.list().err().map(|e| e.kind())),
        ("lock.inspect", lock.inspect().err().map(|e| e.kind())),
        ("lock.try_acquire", lock.try_acquire(1).err().map(|e| e.kind())),
    ];
    assert!(kinds.iter().all(|(_, kind)| *kind == Some(ErrorKind::Closed)), "after close(): {kinds:?}");
}
