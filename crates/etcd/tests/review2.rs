//! Second adversarial review of the etcd scope (after the watch at the current revision,
//! the counting enqueue, the put as a task of its own, TLS and the growing patience).
//! `a_password_in_the_url_is_echoed_in_every_error` fails because of a finding of this
//! review; the other tests assert properties that were checked and found to hold.

use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use etcd_client::{Client, GetOptions};
use latchkey_etcd::EtcdScope;
use latchkey_model::RawScope;
use latchkey_testkit::EtcdCluster;

/// The keys under `prefix` with their create revisions, read with a raw client.
fn keys_under(cluster: &EtcdCluster, prefix: &str) -> Vec<(String, i64)> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let mut client = Client::connect(cluster.endpoints(), None).await.unwrap();
        let answer = client.get(prefix, Some(GetOptions::new().with_prefix())).await.unwrap();
        answer.kvs().iter().map(|kv| (String::from_utf8_lossy(kv.key()).into_owned(), kv.create_revision())).collect()
    })
}

/// The issue lets users give the password in the URL (`etcd://user:password@…`), but
/// the scope keeps the URL verbatim as its name: every error (`with_scope(url)`, in
/// shared.rs, config.rs, lock.rs) prints it, so the password lands in logs and on
/// terminals; `scope_url()` and `inspect` hand it out too.
#[test]
fn a_password_in_the_url_is_echoed_in_every_error() {
    let secret = "s3cret-pw";
    // A URL that does not parse (instant), and one whose cluster is unreachable.
    let bad = format!("etcd://alice:{secret}@127.0.0.1:1/x?ttl=1s");
    let unreachable = format!("etcd://alice:{secret}@127.0.0.1:1/x?ttl=2s");
    let errors = [EtcdScope::open(&bad).unwrap_err(), EtcdScope::open(&unreachable).unwrap_err()];
    let leaking: Vec<String> = errors.iter().map(ToString::to_string).filter(|text| text.contains(secret)).collect();
    assert!(leaking.is_empty(), "errors print the password given in the URL: {leaking:#?}");
}

/// The counting enqueue: a request alone in its queue holds at once, and its fencing
/// token (the Txn's header revision) is its key's create revision as etcd stores it.
#[test]
fn an_uncontended_token_is_the_keys_create_revision() {
    let cluster = EtcdCluster::start(1);
    let scope = EtcdScope::open(&cluster.url_with("t1", "ttl=5s")).unwrap();
    let lock = scope.open("n", 1).unwrap();
    for _ in 0..5 {
        let lease = lock.try_acquire(1).unwrap().expect("free");
        let keys = keys_under(&cluster, "t1/");
        assert_eq!(keys.len(), 1, "{keys:?}");
        assert_eq!(lease.token(), keys[0].1 as u64, "token vs the key's create revision: {keys:?}");
        lock.release(lease).unwrap();
    }
    // With another request queued ahead, the queue is read: the token still matches.
    let sem = scope.open("m", 3).unwrap();
    let a = sem.try_acquire(1).unwrap().expect("free");
    let b = sem.try_acquire(2).unwrap().expect("fits");
    let keys = keys_under(&cluster, "t1/n/m/");
    let revisions: Vec<u64> = keys.iter().map(|k| k.1 as u64).collect();
    assert!(revisions.contains(&a.token()) && revisions.contains(&b.token()) && a.token() < b.token(), "{keys:?}");
}

/// Hand-offs through the watch opened at the current revision: two scopes alternate on
/// one name with a waiter always queued behind the holder; no wake-up is missed (every
/// acquire is granted well within its deadline), and no two hold at once.
#[test]
fn hand_offs_between_scopes_never_miss_a_wake_up() {
    let cluster = EtcdCluster::start(1);
    let url = cluster.url_with("t2", "ttl=5s");
    let holding = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let (url, holding, tx) = (url.clone(), holding.clone(), tx.clone());
            std::thread::spawn(move || {
                let scope = EtcdScope::open(&url).unwrap();
                let lock = scope.open("n", 1).unwrap();
                for _ in 0..60 {
                    let began = Instant::now();
                    let lease = match lock.acquire_blocking(1, Some(Instant::now() + Duration::from_secs(3))) {
                        Ok(lease) => lease,
                        Err(e) => return tx.send(Err(format!("after {:?}: {e}", began.elapsed()))).unwrap(),
                    };
                    assert!(!holding.swap(true, std::sync::atomic::Ordering::SeqCst), "two holders at once");
                    std::thread::sleep(Duration::from_millis(2));
                    holding.store(false, std::sync::atomic::Ordering::SeqCst);
                    lock.release(lease).unwrap();
                }
                tx.send(Ok(())).unwrap();
            })
        })
        .collect();
    drop(tx);
    let outcomes: Vec<_> = rx.iter().collect();
    workers.into_iter().for_each(|w| w.join().unwrap());
    assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
    assert!(keys_under(&cluster, "t2/").is_empty());
}

/// A cede dropped while its requeue and wait are under way gives the lock up (the
/// contract) and leaves no request key behind: the held key and the new one both go.
#[test]
fn a_cede_dropped_midway_leaves_no_key() {
    let cluster = EtcdCluster::start(1);
    let scope = EtcdScope::open(&cluster.url_with("t3", "ttl=5s")).unwrap();
    let other = EtcdScope::open(&cluster.url_with("t3", "ttl=5s")).unwrap();
    let lock = scope.open("n", 1).unwrap();
    let theirs = other.open("n", 1).unwrap();
    for wait_ms in [0u64, 1, 3, 10, 30] {
        let lease = lock.try_acquire(1).unwrap().expect("free");
        // A waiter behind, so that the cede requeues and then waits.
        let (tx, rx) = mpsc::channel();
        let waiting = theirs.clone();
        std::thread::spawn(move || {
            let lease = waiting.acquire_blocking(1, Some(Instant::now() + Duration::from_secs(5)));
            // Held a while: the dropped cede must not be the one that gets it back.
            tx.send(lease.map(|l| {
                std::thread::sleep(Duration::from_millis(500));
                waiting.release(l)
            }))
            .unwrap();
        });
        std::thread::sleep(Duration::from_millis(300));
        let ceder = lock.as_cede().unwrap();
        let cede = ceder.cede(lease);
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let outcome = runtime.block_on(async { tokio::time::timeout(Duration::from_millis(wait_ms), cede).await });
        assert!(outcome.is_err(), "the cede finished within {wait_ms} ms: {outcome:?}");
        let waiter = rx.recv_timeout(Duration::from_secs(6)).expect("the waiter got the lock");
        assert!(matches!(waiter, Ok(Ok(()))), "{waiter:?}");
        let began = Instant::now();
        while !keys_under(&cluster, "t3/").is_empty() && began.elapsed() < Duration::from_secs(3) {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(keys_under(&cluster, "t3/").is_empty(), "keys left: {:?}", keys_under(&cluster, "t3/"));
        let _ = lock.inspect(); // waits for the background withdrawals
    }
}
