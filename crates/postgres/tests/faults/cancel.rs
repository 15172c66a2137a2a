//! Futures of the scope dropped at every await point leave nothing behind on the server.

use std::time::Duration;

use latchkey::Scope;
use latchkey_testkit::cancel::{granted, poll_once, Canceller};
use latchkey_testkit::PostgresServer;
use tokio_postgres::{Client, NoTls};

use crate::support::{advisory_locks, url, wait_until, PATIENCE};

const NAME: &str = "job";
/// The scope's schema.
const SCHEMA: &str = "cancel";
/// Dropped futures per phase.
const ROUNDS: usize = 60;

/// The requests in the schema, as `session/token`, in token order.
async fn keys(client: &Client) -> Vec<String> {
    let rows = client
        .query(&format!("SELECT session, token FROM {SCHEMA}.requests ORDER BY token"), &[])
        .await
        .expect("read the requests");
    rows.iter().map(|row| format!("{}/{}", row.get::<_, i64>(0), row.get::<_, i64>(1))).collect()
}

/// Asserts that, once the scope's background work is done (its `inspect` waits for it),
/// nobody waits for the name and the only requests on the server are `held`.
async fn assert_clean(scope: &Scope, client: &Client, held: &[String], what: &str) {
    let state = scope.inspect_async(NAME).await.unwrap();
    let now = keys(client).await;
    if state.waiters == 0 && state.holders.len() == held.len() && now == held {
        return;
    }
    // Tell a late withdrawal from a key left for good (until its session ends).
    let mut later = now.clone();
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        later = keys(client).await;
        if later == held {
            break;
        }
    }
    panic!(
        "{what}: after the scope's background work, {} holders and {} waiters, requests {now:?} (held: {held:?}); \
         2 s later: {later:?}",
        state.holders.len(),
        state.waiters
    );
}

/// Issue 11: `lock`, `try_lock_async`, `lock_timeout`, `Mutex::lock` and interval-lock
/// `cede` futures dropped at random points (before, during and after each statement and
/// while waiting), uncontended, contended, and racing with a release, leave no request
/// and no waiter behind, and the lock is free afterwards; closed scopes leave no advisory
/// lock.
#[test]
fn dropped_futures_leave_nothing_behind() {
    let server = PostgresServer::start();
    let url = url(&server, SCHEMA, "3s", "");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let mut cancel = Canceller::from_clock("cancel");
        let (client, connection) = tokio_postgres::connect(&server.url(""), NoTls).await.unwrap();
        tokio::spawn(connection);
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

        println!("contended");
        // Contended: nothing may be granted; every dropped request must be withdrawn.
        let holder = other.lock_timeout(NAME, PATIENCE).await.unwrap();
        let held = keys(&client).await;
        assert_eq!(held.len(), 1, "the holder's request: {held:?}");
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
            println!("{what}");
            assert_clean(&scope, &client, &held, &what).await;
        }
        holder.release_async().await.unwrap();
        assert_clean(&scope, &client, &[], "contended, then released").await;

        println!("racing");
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
            println!("{what}");
            assert_clean(&scope, &client, &[], &what).await;
        }

        println!("ceding");
        // Ceding: a cede dropped at any point gives the lock up (or hands it over) and
        // leaves no request of this scope behind.
        let interval = scope.interval_lock("ceded", Duration::from_millis(1)).unwrap();
        let theirs = other.interval_lock("ceded", Duration::from_millis(1)).unwrap();
        for round in 0..ROUNDS / 3 {
            let guard = interval.lock().await.unwrap();
            let mut waiter = Box::pin(theirs.lock());
            assert!(poll_once(waiter.as_mut()).await.is_none(), "granted while held by another");
            wait_until_waiting(&scope, "ceded").await;
            let ceded = cancel.run(guard.cede()).await;
            println!("cede round {round} dropped {}", cancel.point);
            let kept = matches!(&ceded, Some(Ok(_)));
            drop(ceded);
            let theirs_now = waiter.await.expect("the waiter is granted after the cede");
            theirs_now.release().expect("the waiter releases");
            let what = format!("cede round {round} (came back: {kept}) dropped {}", cancel.point);
            let state = scope.inspect_async("ceded").await.unwrap();
            assert_eq!((state.holders.len(), state.waiters), (0, 0), "{what}");
            assert_eq!(keys(&client).await, Vec::<String>::new(), "{what}");
        }

        let free = other.try_lock_async(NAME).await.unwrap().expect("the lock is free");
        free.release_async().await.unwrap();
        scope.close().await.unwrap();
        other.close().await.unwrap();
        assert_eq!(keys(&client).await, Vec::<String>::new());
    });
    // The closed scopes' sessions end on the server, with their advisory locks.
    wait_until("the sessions' advisory locks go", || advisory_locks(&server) == 0);
}

/// Waits until someone waits for `name`.
async fn wait_until_waiting(scope: &Scope, name: &str) {
    for _ in 0..(PATIENCE.as_millis() / 5) {
        if scope.inspect_async(name).await.unwrap().waiters > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("nobody waits for {name}");
}
