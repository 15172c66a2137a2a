//! Futures of the scope dropped at every await point leave nothing behind on the server.

use std::time::Duration;

use etcd_client::Client;
use latchkey::Scope;
use latchkey_testkit::cancel::{granted, poll_once, Canceller};
use latchkey_testkit::EtcdCluster;

use crate::fenced::{connect, keys};
use crate::support::PATIENCE;

const NAME: &str = "job";
/// The scope's key prefix, and the prefix of every key it makes.
const PREFIX: &str = "cancel";
/// Dropped futures per phase.
const ROUNDS: usize = 60;

/// Asserts that, once the scope's background work is done (its `inspect` waits for it),
/// nobody waits for the name and the only keys under the scope's prefix are `held`.
async fn assert_clean(scope: &Scope, client: &Client, held: &[String], what: &str) {
    let state = scope.inspect_async(NAME).await.unwrap();
    let now = keys(client.clone(), format!("{PREFIX}/")).await;
    if state.waiters == 0 && state.holders.len() == held.len() && now == held {
        return;
    }
    // Tell a late withdrawal from a key left for good (until its session ends).
    let mut later = now.clone();
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        later = keys(client.clone(), format!("{PREFIX}/")).await;
        if later == held {
            break;
        }
    }
    panic!(
        "{what}: after the scope's background work, {} holders and {} waiters, keys {now:?} (held: {held:?}); \
         2 s later: {later:?}",
        state.holders.len(),
        state.waiters
    );
}

/// Issue 10: `lock`, `try_lock_async`, `lock_timeout` and `Mutex::lock` futures dropped at
/// random points (before, during and after each etcd call and while waiting), uncontended,
/// contended, and racing with a release, leave no request key and no waiter behind, and
/// the lock is free afterwards.
#[test]
fn dropped_futures_leave_nothing_behind() {
    let cluster = EtcdCluster::start(1);
    let url = cluster.url_with(PREFIX, "ttl=3s");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let mut cancel = Canceller::from_clock("cancel");
        let client = connect(&cluster.endpoints()).await;
        let scope = Scope::connect(&url).await.unwrap();
        let other = Scope::connect(&url).await.unwrap();
        let mutex = scope.mutex(NAME).unwrap();

        // Uncontended: a future that completes gives its guard back, dropped or released.
        let (mut won, mut refused) = (0, 0);
        for round in 0..ROUNDS {
            let timeout = Duration::from_millis(1 + cancel.rng.below(20));
            let (call, guard) = match round % 4 {
                0 => ("lock", granted(cancel.run(scope.lock(NAME)).await)),
                1 => match granted(cancel.run(scope.try_lock_async(NAME)).await) {
                    Some(None) => {
                        refused += 1;
                        ("try_lock_async", None)
                    }
                    other => ("try_lock_async", other.flatten()),
                },
                2 => ("lock_timeout", granted(cancel.run(scope.lock_timeout(NAME, timeout)).await)),
                _ => ("Mutex::lock", granted(cancel.run(mutex.lock()).await)),
            };
            let granted = guard.is_some();
            if let Some(guard) = guard {
                won += 1;
                if cancel.rng.below(2) == 0 {
                    guard.release_async().await.unwrap();
                }
            }
            let what = format!("uncontended round {round}: {call} (granted: {granted}) dropped {}", cancel.point);
            assert_clean(&scope, &client, &[], &what).await;
        }
        println!("uncontended: {won} of {ROUNDS} granted before the drop, {refused} try_lock refused");
        assert_eq!(refused, 0, "try_lock_async refused a lock nobody held or waited for");

        // Contended: nothing may be granted; every dropped request must be withdrawn.
        let holder = other.lock_timeout(NAME, PATIENCE).await.unwrap();
        let held = keys(client.clone(), format!("{PREFIX}/")).await;
        assert_eq!(held.len(), 1, "the holder's request key: {held:?}");
        for round in 0..ROUNDS {
            let timeout = Duration::from_millis(1 + cancel.rng.below(20));
            let (call, won) = match round % 5 {
                0 => ("lock", granted(cancel.run(scope.lock(NAME)).await).is_some()),
                1 => ("try_lock_async", granted(cancel.run(scope.try_lock_async(NAME)).await).flatten().is_some()),
                2 => ("lock_timeout", granted(cancel.run(scope.lock_timeout(NAME, timeout)).await).is_some()),
                3 => ("Mutex::lock", granted(cancel.run(mutex.lock()).await).is_some()),
                _ => {
                    let many = async { tokio::join!(scope.lock(NAME), scope.lock(NAME), mutex.lock()) };
                    ("three locks joined", cancel.run(many).await.is_some())
                }
            };
            assert!(!won, "{call} granted while another scope holds the lock (round {round})");
            let what = format!("contended round {round}: {call} dropped {}", cancel.point);
            assert_clean(&scope, &client, &held, &what).await;
        }
        holder.release_async().await.unwrap();
        assert_clean(&scope, &client, &[], "contended, then released").await;

        // Racing with a release: the holder releases while the waiter's future is dropped;
        // a grant that raced with the drop must be given back.
        for round in 0..ROUNDS / 3 {
            let holder = other.lock_timeout(NAME, PATIENCE).await.unwrap();
            // Boxed, so that `run` owns the future and its drop is the future's drop.
            let mut waiter = Box::pin(scope.lock(NAME));
            assert!(poll_once(waiter.as_mut()).await.is_none(), "granted while held by another");
            std::thread::sleep(Duration::from_micros(cancel.rng.below(3000)));
            holder.release_async().await.unwrap();
            std::thread::sleep(Duration::from_micros(cancel.rng.below(5000)));
            let granted = granted(cancel.run(waiter).await).is_some();
            let what = format!("racing round {round}: lock (granted: {granted}) dropped {}", cancel.point);
            assert_clean(&scope, &client, &[], &what).await;
        }

        let free = other.try_lock_async(NAME).await.unwrap().expect("the lock is free");
        free.release_async().await.unwrap();
        scope.close().await.unwrap();
        other.close().await.unwrap();
        assert_eq!(keys(client.clone(), format!("{PREFIX}/")).await, Vec::<String>::new());
    });
}
