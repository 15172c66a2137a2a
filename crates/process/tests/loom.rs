//! Loom models of the engine's concurrent core: every interleaving (up to loom's
//! bounds) of acquire, release, cancel and cede.
//!
//! Run with `RUSTFLAGS="--cfg loom" cargo test -p latchkey-process --test loom --release`.
#![cfg(loom)]

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll};

use latchkey_process::engine::FairSemaphore;
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;

/// Takes a permit, checks nobody else is inside, and releases.
fn critical_section(sem: &FairSemaphore, inside: &AtomicUsize) {
    loom::future::block_on(sem.acquire(1)).unwrap();
    assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0, "two holders of a mutex");
    inside.fetch_sub(1, Ordering::SeqCst);
    sem.release(1).unwrap();
}

#[test]
fn mutual_exclusion() {
    loom::model(|| {
        let sem = Arc::new(FairSemaphore::new(1));
        let inside = Arc::new(AtomicUsize::new(0));
        let other = {
            let (sem, inside) = (sem.clone(), inside.clone());
            thread::spawn(move || critical_section(&sem, &inside))
        };
        critical_section(&sem, &inside);
        other.join().unwrap();
        assert_eq!(sem.in_use(), 0);
        assert_eq!(sem.waiters(), (0, 0));
    });
}

#[test]
fn a_cancel_racing_a_release_loses_nothing() {
    loom::model(|| {
        let sem = Arc::new(FairSemaphore::new(1));
        sem.try_acquire(1).unwrap();
        let waiter = {
            let sem = sem.clone();
            thread::spawn(move || {
                let mut wait = pin!(sem.acquire(1));
                let mut cx = Context::from_waker(futures_task::noop_waker_ref());
                if let Poll::Ready(token) = wait.as_mut().poll(&mut cx) {
                    // Granted at once: the release came first. Give it back.
                    assert!(token.is_some());
                    sem.release(1).unwrap();
                }
                // Otherwise dropped while queued, or granted in between: either way
                // nothing may stay held or queued.
            })
        };
        sem.release(1).unwrap();
        waiter.join().unwrap();
        assert_eq!(sem.in_use(), 0);
        assert_eq!(sem.waiters(), (0, 0));
        assert!(sem.try_acquire(1).is_some());
    });
}

#[test]
fn weighted_requests_stay_within_capacity() {
    loom::model(|| {
        let sem = Arc::new(FairSemaphore::new(2));
        let held = Arc::new(AtomicUsize::new(0));
        let take = |sem: Arc<FairSemaphore>, held: Arc<AtomicUsize>, permits: u32| {
            move || {
                loom::future::block_on(sem.acquire(permits)).unwrap();
                let now = held.fetch_add(permits as usize, Ordering::SeqCst) + permits as usize;
                assert!(now <= 2, "{now} permits held of 2");
                held.fetch_sub(permits as usize, Ordering::SeqCst);
                sem.release(permits).unwrap();
            }
        };
        let big = thread::spawn(take(sem.clone(), held.clone(), 2));
        take(sem.clone(), held.clone(), 1)();
        big.join().unwrap();
        assert_eq!(sem.in_use(), 0);
    });
}

#[test]
fn cede_hands_over_to_a_concurrent_waiter() {
    loom::model(|| {
        let sem = Arc::new(FairSemaphore::new(1));
        let first = sem.try_acquire(1).unwrap();
        let waiter = {
            let sem = sem.clone();
            thread::spawn(move || {
                let token = loom::future::block_on(sem.acquire(1)).unwrap();
                sem.release(1).unwrap();
                token
            })
        };
        // Whether or not the waiter had queued yet, the ceder ends up holding the
        // lock again with a token at least as new as any before.
        let after = loom::future::block_on(sem.cede(1)).unwrap_or(first);
        assert!(after >= first);
        sem.release(1).unwrap();
        let theirs = waiter.join().unwrap();
        assert_ne!(theirs, after, "each grant has its own token");
        assert_eq!(sem.in_use(), 0);
    });
}
