//! Tests of the process scope: reclamation, capacities, and the per-thread cache
//! racing the sweeper.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;

use latchkey_model::ErrorKind;

use crate::ProcessScope;

#[test]
fn unused_names_are_reclaimed() {
    let scope = ProcessScope::new();
    for i in 0..100_000 {
        let name = format!("churn/{i}");
        drop(scope.acquire_blocking(&name, 1, 1, None).unwrap());
        assert!(scope.registered_names() <= 64 * 64, "the registry grew to {}", scope.registered_names());
    }
    scope.compact();
    assert_eq!(scope.registered_names(), 0);
}

#[test]
fn names_in_use_are_kept() {
    let scope = ProcessScope::new();
    let handle = scope.open("kept/handle", 1).unwrap();
    let permit = scope.try_acquire("kept/permit", 2, 1).unwrap().unwrap();
    scope.compact();
    assert_eq!(scope.registered_names(), 2);
    assert_eq!(scope.inspect("kept/permit").unwrap().in_use, 1);
    drop((handle, permit));
    scope.compact();
    assert_eq!(scope.registered_names(), 0);
}

#[test]
fn a_name_in_use_keeps_its_capacity() {
    let scope = ProcessScope::new();
    let mutex = scope.open("cap", 1).unwrap();
    let err = scope.open("cap", 3).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::CapacityMismatch);
    assert_eq!(err.name(), Some("cap"));
    assert_eq!(err.scope(), Some("process:"));
    assert!(err.to_string().contains("a mutex"), "{err}");
    let held = mutex.try_acquire(1).unwrap().unwrap();
    drop(mutex);
    // Held by a permit: still in use.
    assert_eq!(scope.open("cap", 3).unwrap_err().kind(), ErrorKind::CapacityMismatch);
    drop(held);
    // Unused: the name starts over.
    assert_eq!(scope.open("cap", 3).unwrap().capacity(), 3);
}

#[test]
fn tokens_increase_across_handles_and_the_cache() {
    let scope = ProcessScope::new();
    let handle = scope.open("tokens", 1).unwrap();
    let mut last = 0;
    for i in 0..10 {
        let permit = if i % 2 == 0 {
            handle.try_acquire(1).unwrap().unwrap()
        } else {
            scope.try_acquire("tokens", 1, 1).unwrap().unwrap()
        };
        assert!(permit.token() > last);
        last = permit.token();
    }
}

/// A counter that is only correct if the lock excludes.
struct Unsynchronized(UnsafeCell<u64>);
// SAFETY: every access happens while holding the lock under test; the test checks
// that the lock really excluded.
unsafe impl Sync for Unsynchronized {}

#[test]
fn the_cache_never_grants_a_retired_entry() {
    // Threads lock one name through their caches while another thread sweeps it away
    // whenever it is idle. A grant on a retired entry would let two threads in.
    let scope = Arc::new(ProcessScope::new());
    let counter = Arc::new(Unsynchronized(UnsafeCell::new(0)));
    let inside = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    const THREADS: u64 = 4;
    const ROUNDS: u64 = 20_000;
    let sweeper = {
        let (scope, stop) = (scope.clone(), stop.clone());
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                scope.compact();
            }
        })
    };
    let workers: Vec<_> = (0..THREADS)
        .map(|_| {
            let (scope, counter, inside) = (scope.clone(), counter.clone(), inside.clone());
            thread::spawn(move || {
                for _ in 0..ROUNDS {
                    let permit = scope.acquire_blocking("hot", 1, 1, None).unwrap();
                    assert!(!inside.swap(true, Ordering::SeqCst), "two holders at once");
                    // SAFETY: we hold the lock.
                    unsafe { *counter.0.get() += 1 };
                    inside.store(false, Ordering::SeqCst);
                    drop(permit);
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    sweeper.join().unwrap();
    // SAFETY: every thread that touched it has been joined.
    assert_eq!(unsafe { *counter.0.get() }, THREADS * ROUNDS);
}

#[test]
fn a_dropped_scope_leaves_held_permits_valid() {
    let scope = ProcessScope::new();
    let permit = scope.try_acquire("outlives", 1, 1).unwrap().unwrap();
    let handle = scope.open("handle", 1).unwrap();
    drop(scope);
    // The handle keeps its registry alive; the permit's entry is kept for good.
    let held = handle.try_acquire(1).unwrap().unwrap();
    assert_eq!(permit.name().as_str(), "outlives");
    drop((permit, held));
}

#[test]
fn an_unpolled_contract_cede_releases_the_lease() {
    use latchkey_model::RawScope;
    let scope = ProcessScope::new();
    let lock = RawScope::open(&scope, "cede", 1).unwrap();
    let lease = lock.try_acquire(1).unwrap().unwrap();
    drop(lock.as_cede().expect("the process scope cedes").cede(lease));
    assert_eq!(scope.inspect("cede").unwrap().in_use, 0);
    assert!(lock.try_acquire(1).unwrap().is_some());
}

#[test]
fn a_name_that_starts_over_keeps_its_tokens_increasing() {
    let scope = ProcessScope::new();
    let before = scope.try_acquire("again", 1, 1).unwrap().unwrap().token();
    scope.compact();
    assert_eq!(scope.registered_names(), 0);
    assert!(scope.try_acquire("again", 1, 1).unwrap().unwrap().token() > before);
    let as_semaphore = scope.try_acquire("again", 3, 1).unwrap().unwrap().token();
    assert!(as_semaphore > before + 1);
}
