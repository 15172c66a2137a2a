//! A client cut off from the cluster, watches that miss their events (compaction, a
//! reconnect), and a waiter that costs the cluster nothing while it waits.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use latchkey::{Guard, Result, Scope};
use latchkey_testkit::EtcdCluster;

use crate::fenced::Etcd;
use crate::support::{wait_until, PATIENCE};

/// Waits for `name` in `scope` on a thread of its own: the receiver gets the instant of the
/// grant and the outcome. Returns once the request is queued (`queued` of them wait).
fn wait_in_thread(scope: &Scope, name: &str, queued: usize) -> mpsc::Receiver<(Instant, Result<Guard<'static>>)> {
    let (sender, receiver) = mpsc::channel();
    let (waiter, name_owned) = (scope.clone(), name.to_string());
    std::thread::spawn(move || {
        let guard = waiter.lock_blocking_timeout(&name_owned, PATIENCE);
        let _ = sender.send((Instant::now(), guard));
    });
    wait_until("the waiter queues", || scope.inspect(name).unwrap().waiters == queued);
    receiver
}

/// Issue 10: a holder whose client is cut off from the cluster (every proxy of its URL
/// cut) learns it within its TTL: `lost()` completes, and by the time another client is
/// granted the lock (after the lease expired on the server), `is_lost()` says so.
#[test]
fn a_client_cut_off_loses_its_hold_within_its_ttl() {
    const TTL: Duration = Duration::from_secs(2);
    let cluster = EtcdCluster::start(1);
    let (proxied, proxies) = cluster.proxied_url("cut");
    let scope = Scope::open(&format!("{proxied}?ttl=2s")).unwrap();
    let guard = scope.lock_blocking("job").unwrap();
    let lost = guard.lost();
    let (lost_tx, lost_at) = mpsc::channel();
    std::thread::spawn(move || {
        if latchkey_model::block_on_until(lost, Some(Instant::now() + PATIENCE)).is_some() {
            let _ = lost_tx.send(Instant::now());
        }
    });

    let other = Scope::open(&cluster.url_with("cut", "ttl=2s")).unwrap();
    let granted = wait_in_thread(&other, "job", 1);
    for proxy in &proxies {
        proxy.cut();
    }
    let cut = Instant::now();
    let (granted_at, new_guard) = granted.recv_timeout(PATIENCE).expect("the other client is granted");
    let new_guard = new_guard.expect("the other client's lock");
    assert!(guard.is_lost(), "another client holds the lock and the cut-off guard does not know it lost it");
    let lost_at = lost_at.recv_timeout(PATIENCE).expect("lost() completes");
    let (lost_after, granted_after) = (lost_at - cut, granted_at - cut);
    println!("cut to lost(): {lost_after:?}; cut to the other client's grant: {granted_after:?} (TTL {TTL:?})");
    assert!(lost_after <= TTL + Duration::from_secs(1), "lost() {lost_after:?} after the cut; the TTL is {TTL:?}");
    assert!(new_guard.fencing_token() > guard.fencing_token());
    new_guard.release().unwrap();
}

/// Issue 10: compactions while a waiter waits (its watch's history removed, several times)
/// do not keep it from being granted when the holder releases.
#[test]
fn a_waiter_is_granted_after_compactions() {
    let cluster = EtcdCluster::start(1);
    let url = cluster.url_with("compact", "ttl=3s");
    let etcd = Etcd::connect(&cluster.endpoints());
    let holder = Scope::open(&url).unwrap();
    let guard = holder.lock_blocking("job").unwrap();
    let waiter = Scope::open(&url).unwrap();
    let granted = wait_in_thread(&waiter, "job", 1);
    for round in 0..5 {
        for i in 0..10 {
            etcd.put(&format!("junk/{round}/{i}"), "x");
        }
        cluster.compact();
    }
    let (held_token, released) = (guard.fencing_token(), Instant::now());
    guard.release().unwrap();
    let (at, new_guard) = granted.recv_timeout(PATIENCE).expect("the waiter is granted");
    let new_guard = new_guard.expect("the waiter's lock");
    println!("release to grant after 5 compactions: {:?}", at - released);
    assert!(new_guard.fencing_token() > held_token);
}

/// Issue 10: a waiter that misses the release it waits for (its connections held, then
/// reset, while the holder released and the cluster compacted past the release) is
/// still granted once it reaches the cluster again.
#[test]
fn a_waiter_whose_release_was_compacted_away_is_granted() {
    let cluster = EtcdCluster::start(1);
    let etcd = Etcd::connect(&cluster.endpoints());
    let holder = Scope::open(&cluster.url_with("missed", "ttl=3s")).unwrap();
    let guard = holder.lock_blocking("job").unwrap();
    let (proxied, proxies) = cluster.proxied_url("missed");
    let waiter = Scope::open(&format!("{proxied}?ttl=5s")).unwrap();
    let granted = wait_in_thread(&waiter, "job", 1);
    // Let the waiter's watch start before its connections are held.
    std::thread::sleep(Duration::from_millis(200));

    for proxy in &proxies {
        proxy.cut();
    }
    let held_token = guard.fencing_token();
    guard.release().unwrap();
    for i in 0..10 {
        etcd.put(&format!("junk/{i}"), "x");
    }
    cluster.compact();
    for proxy in &proxies {
        proxy.drop_connections();
        proxy.heal();
    }
    let healed = Instant::now();
    let (at, new_guard) = granted.recv_timeout(PATIENCE).expect("the waiter is granted");
    let new_guard = new_guard.expect("the waiter's lock");
    println!("reconnect to grant: {:?}", at - healed);
    assert!(new_guard.fencing_token() > held_token);
    new_guard.release().unwrap();
}

/// Issue 10: a waiter that waits 2 s makes no request to the cluster meanwhile (no
/// polling): the cluster's unary gRPC calls do not change; keep-alives and the watch are
/// streams.
#[test]
fn a_waiting_waiter_makes_no_requests() {
    let cluster = EtcdCluster::start(1);
    let url = cluster.url_with("quiet", "ttl=2s");
    let holder = Scope::open(&url).unwrap();
    let guard = holder.lock_blocking("job").unwrap();
    let waiter = Scope::open(&url).unwrap();
    let granted = wait_in_thread(&waiter, "job", 1);
    // The waiter's watch is opened just after it queued.
    std::thread::sleep(Duration::from_millis(300));

    let before = cluster.grpc_counts();
    std::thread::sleep(Duration::from_secs(2));
    let after = cluster.grpc_counts();
    let made: Vec<(String, u64)> = after
        .by_method
        .iter()
        .map(|(method, n)| (method.clone(), n - before.by_method.get(method).copied().unwrap_or(0)))
        .filter(|(_, n)| *n > 0)
        .collect();
    println!(
        "in 2 s of waiting: {} unary calls {made:?}, {} stream messages",
        after.unary - before.unary,
        after.stream_messages - before.stream_messages
    );
    assert_eq!(after.unary - before.unary, 0, "requests made while nothing changed: {made:?}");

    guard.release().unwrap();
    let (_, new_guard) = granted.recv_timeout(PATIENCE).expect("the waiter is granted");
    new_guard.expect("the waiter's lock").release().unwrap();
}
