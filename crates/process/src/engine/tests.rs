//! Deterministic tests of the engine: futures are polled by hand, wakes are counted,
//! and nothing sleeps.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use super::{FairSemaphore, Overfilled, Wait};

/// A waker that counts its wakes.
#[derive(Default)]
struct Counter(AtomicUsize);

impl Wake for Counter {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// A future under test, with its own counting waker.
struct Polled<'a> {
    future: Pin<Box<Wait<'a>>>,
    wakes: Arc<Counter>,
}

impl<'a> Polled<'a> {
    fn new(future: Wait<'a>) -> Self {
        Polled { future: Box::pin(future), wakes: Arc::default() }
    }

    fn poll(&mut self) -> Poll<Option<u64>> {
        let waker = Waker::from(self.wakes.clone());
        self.future.as_mut().poll(&mut Context::from_waker(&waker))
    }

    fn woken(&self) -> bool {
        self.wakes.0.load(Ordering::SeqCst) > 0
    }

    fn granted(&mut self) -> u64 {
        match self.poll() {
            Poll::Ready(Some(token)) => token,
            other => panic!("expected a grant, got {other:?}"),
        }
    }
}

#[test]
fn grants_in_arrival_order() {
    let sem = FairSemaphore::new(1);
    let first = sem.try_acquire(1).unwrap();
    let mut waiters: Vec<Polled> = (0..3).map(|_| Polled::new(sem.acquire(1))).collect();
    for w in &mut waiters {
        assert!(w.poll().is_pending());
    }
    let mut last = first;
    for i in 0..3 {
        sem.release(1).unwrap();
        assert!(waiters[i].woken(), "waiter {i} is next");
        assert!(waiters[i + 1..].iter().all(|w| !w.woken()), "only the head is woken");
        let token = waiters[i].granted();
        assert!(token > last, "tokens increase");
        last = token;
    }
    sem.release(1).unwrap();
    assert_eq!(sem.in_use(), 0);
    assert_eq!(sem.waiters(), (0, 0));
}

#[test]
fn nothing_barges_past_a_waiter() {
    let sem = FairSemaphore::new(3);
    sem.try_acquire(2).unwrap();
    let mut big = Polled::new(sem.acquire(3));
    assert!(big.poll().is_pending());
    // One permit is free, but the head asks for three: FIFO holds the small ones back.
    let mut small = Polled::new(sem.acquire(1));
    assert!(small.poll().is_pending());
    assert_eq!(sem.try_acquire(1), None);
    sem.release(2).unwrap();
    big.granted();
    assert!(!small.woken());
    sem.release(3).unwrap();
    assert!(small.woken());
    small.granted();
}

#[test]
fn a_withdrawn_head_lets_the_next_through() {
    let sem = FairSemaphore::new(3);
    sem.try_acquire(2).unwrap();
    let mut big = Polled::new(sem.acquire(3));
    assert!(big.poll().is_pending());
    let mut small = Polled::new(sem.acquire(1));
    assert!(small.poll().is_pending());
    drop(big);
    assert!(small.woken(), "the wake-up meant for the queue is not swallowed");
    small.granted();
    assert_eq!(sem.in_use(), 3);
    assert_eq!(sem.waiters(), (0, 0));
}

#[test]
fn a_grant_to_a_dropped_future_passes_on() {
    let sem = FairSemaphore::new(1);
    sem.try_acquire(1).unwrap();
    let mut a = Polled::new(sem.acquire(1));
    let mut b = Polled::new(sem.acquire(1));
    assert!(a.poll().is_pending());
    assert!(b.poll().is_pending());
    sem.release(1).unwrap();
    assert!(a.woken());
    drop(a); // granted, never polled again
    assert!(b.woken());
    b.granted();
    sem.release(1).unwrap();
    assert_eq!(sem.in_use(), 0);
    assert!(sem.try_acquire(1).is_some());
}

#[test]
fn cede_keeps_the_lock_when_nobody_waits() {
    let sem = FairSemaphore::new(1);
    let token = sem.try_acquire(1).unwrap();
    let mut cede = Polled::new(sem.cede(1));
    assert_eq!(cede.poll(), Poll::Ready(None));
    assert_eq!(sem.in_use(), 1);
    assert_eq!(sem.last_token(), token);
}

#[test]
fn cede_hands_over_and_queues_at_the_back() {
    let sem = FairSemaphore::new(1);
    let held = sem.try_acquire(1).unwrap();
    let mut waiter = Polled::new(sem.acquire(1));
    assert!(waiter.poll().is_pending());
    let mut cede = Polled::new(sem.cede(1));
    assert!(cede.poll().is_pending());
    assert!(waiter.woken());
    let handed = waiter.granted();
    assert!(handed > held);
    sem.release(1).unwrap();
    assert!(cede.woken());
    assert!(cede.granted() > handed);
}

#[test]
fn an_unpolled_cede_gives_the_permits_up() {
    let sem = FairSemaphore::new(1);
    sem.try_acquire(1).unwrap();
    drop(sem.cede(1));
    assert_eq!(sem.in_use(), 0);
}

#[test]
fn writers_block_later_readers() {
    let capacity = latchkey_model::RWLOCK_CAPACITY;
    let sem = FairSemaphore::new(capacity);
    sem.try_acquire(1).unwrap(); // a reader
    let mut writer = Polled::new(sem.acquire(capacity));
    assert!(writer.poll().is_pending());
    assert_eq!(sem.try_acquire(1), None, "a queued writer holds back new readers");
    let mut reader = Polled::new(sem.acquire(1));
    assert!(reader.poll().is_pending());
    assert_eq!(sem.waiters(), (2, 1));
    sem.release(1).unwrap();
    writer.granted();
    assert!(!reader.woken());
    sem.release(capacity).unwrap();
    reader.granted();
}

#[test]
fn one_release_grants_every_reader_that_fits() {
    let capacity = latchkey_model::RWLOCK_CAPACITY;
    let sem = FairSemaphore::new(capacity);
    sem.try_acquire(capacity).unwrap(); // a writer
    let mut readers: Vec<Polled> = (0..6).map(|_| Polled::new(sem.acquire(1))).collect();
    for r in &mut readers {
        assert!(r.poll().is_pending());
    }
    sem.release(capacity).unwrap();
    let tokens: Vec<u64> = readers.iter_mut().map(|r| r.granted()).collect();
    assert!(tokens.windows(2).all(|w| w[0] < w[1]), "grants in order, each with its own token: {tokens:?}");
    assert_eq!(sem.in_use(), 6);
}

#[test]
fn retires_only_when_idle() {
    let sem = FairSemaphore::new(2);
    sem.try_acquire(1).unwrap();
    assert!(!sem.retire());
    sem.release(1).unwrap();
    assert!(sem.retire());
    assert!(sem.is_retired());
    assert_eq!(sem.try_acquire(1), None);
}

#[test]
fn releasing_more_than_is_held_is_refused() {
    let sem = FairSemaphore::new(2);
    assert_eq!(sem.release(1), Err(Overfilled));
    sem.try_acquire(1).unwrap();
    assert_eq!(sem.release(2), Err(Overfilled));
    assert_eq!(sem.release(1), Ok(()));
    assert_eq!(sem.in_use(), 0);
}

#[test]
fn repeated_hand_offs_keep_arrival_order() {
    let sem = FairSemaphore::new(1);
    sem.try_acquire(1).unwrap();
    for _ in 0..20 {
        let mut a = Polled::new(sem.acquire(1));
        let mut b = Polled::new(sem.acquire(1));
        assert!(a.poll().is_pending());
        assert!(b.poll().is_pending());
        sem.release(1).unwrap();
        assert!(a.woken() && !b.woken());
        a.granted();
        sem.release(1).unwrap();
        b.granted();
    }
}
