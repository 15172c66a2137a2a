//! A release costs the waiters no reads: each applies the deletions its watch reports to
//! the queue it read (before, every deletion made every waiter of the name read the
//! queue again: n(n-1)/2 reads to hand a lock down a queue of n).

use std::time::{Duration, Instant};

use latchkey::Scope;
use latchkey_testkit::EtcdCluster;

const WAITERS: usize = 6;

/// Waits until the cluster has served no request for a while: the waiters are settled.
fn settled(cluster: &EtcdCluster) -> u64 {
    let mut last = cluster.count_requests();
    let mut quiet_since = Instant::now();
    let start = Instant::now();
    while quiet_since.elapsed() < Duration::from_millis(500) {
        assert!(start.elapsed() < Duration::from_secs(30), "the waiters never settled");
        std::thread::sleep(Duration::from_millis(50));
        let now = cluster.count_requests();
        if now != last {
            (last, quiet_since) = (now, Instant::now());
        }
    }
    last
}

#[test]
fn handing_a_lock_down_a_queue_costs_one_delete_per_holder() {
    let cluster = EtcdCluster::start(1);
    let scope = Scope::open(&cluster.url_with("herd", "ttl=5s")).unwrap();
    let holder = scope.lock_blocking("q").unwrap();
    let tokens = std::thread::scope(|s| {
        let waiters: Vec<_> = (0..WAITERS)
            .map(|_| {
                s.spawn(|| {
                    let guard = scope.lock_blocking("q").unwrap();
                    let token = guard.fencing_token();
                    guard.release().unwrap();
                    token
                })
            })
            .collect();
        let start = Instant::now();
        while scope.inspect("q").unwrap().waiters < WAITERS {
            assert!(start.elapsed() < Duration::from_secs(30), "the waiters never queued");
            std::thread::sleep(Duration::from_millis(10));
        }
        let before = settled(&cluster);
        holder.release().unwrap();
        let tokens: Vec<u64> = waiters.into_iter().map(|w| w.join().unwrap()).collect();
        let used = cluster.count_requests() - before;
        // One delete per release (the holder's and each waiter's); nothing else.
        assert!(
            used <= (WAITERS + 1) as u64,
            "handing the lock down {WAITERS} waiters took {used} requests, more than {} deletes",
            WAITERS + 1
        );
        tokens
    });
    let mut sorted = tokens.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), WAITERS, "every waiter had a grant of its own: {tokens:?}");
}
