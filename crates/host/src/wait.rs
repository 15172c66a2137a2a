//! Async waiting on a host lock: the request is queued on the caller's thread when the
//! future is first polled (so FIFO order is poll order); a helper thread sleeps on the
//! waiter's futex word and wakes the task; dropping the future withdraws the request at
//! once.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use crate::namespace::Namespace;
use crate::record::{Grant, Rec, LIVENESS_PERIOD, QUEUE_FULL_PAUSE};

/// Resolves to the grant of waiter `w` of a record.
pub(crate) struct WaitGrant {
    ns: Arc<Namespace>,
    index: usize,
    capacity: u32,
    w: usize,
    shared: Arc<Shared>,
    done: bool,
}

#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl WaitGrant {
    /// Watches waiter `w` (already queued) of record `index`.
    pub(crate) fn new(ns: Arc<Namespace>, index: usize, capacity: u32, w: usize) -> Self {
        let shared = Arc::new(Shared::default());
        let watcher = (ns.clone(), shared.clone());
        std::thread::Builder::new()
            .name("latchkey-wait".into())
            .spawn(move || watch(&watcher.0, index, capacity, w, &watcher.1))
            .expect("cannot start a latchkey wait thread");
        WaitGrant { ns, index, capacity, w, shared, done: false }
    }

    fn rec(&self) -> Rec<'_> {
        self.ns.rec(self.index, self.capacity)
    }
}

/// The helper thread: sleeps until the grant is published or the future is dropped,
/// checking the holders' liveness as a blocking waiter does.
fn watch(ns: &Namespace, index: usize, capacity: u32, w: usize, shared: &Shared) {
    let rec = ns.rec(index, capacity);
    let mut next_check = Instant::now() + LIVENESS_PERIOD;
    while !shared.stop.load(Ordering::Acquire) {
        if rec.is_granted(w) {
            if let Some(waker) = shared.waker.lock().expect("waker lock").take() {
                waker.wake();
            }
            return;
        }
        if Instant::now() >= next_check {
            rec.repair_if_dead();
            next_check = Instant::now() + LIVENESS_PERIOD;
        }
        if !rec.spin_for_grant(w) {
            rec.sleep_on(w, next_check.saturating_duration_since(Instant::now()));
        }
    }
}

impl Future for WaitGrant {
    type Output = Grant;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Grant> {
        if let Some(grant) = self.rec().take_grant(self.w) {
            self.done = true;
            self.shared.stop.store(true, Ordering::Release);
            return Poll::Ready(grant);
        }
        *self.shared.waker.lock().expect("waker lock") = Some(cx.waker().clone());
        // Checked again after storing the waker, so a grant in between is not missed.
        if let Some(grant) = self.rec().take_grant(self.w) {
            self.done = true;
            self.shared.stop.store(true, Ordering::Release);
            return Poll::Ready(grant);
        }
        Poll::Pending
    }
}

impl Drop for WaitGrant {
    fn drop(&mut self) {
        if !self.done {
            self.shared.stop.store(true, Ordering::Release);
            let rec = self.rec();
            rec.withdraw(self.w);
            rec.wake_waiter(self.w);
        }
    }
}

/// Resolves once the queue of a record has room again (or at once if it has), without
/// blocking the caller's thread: a helper thread looks every `QUEUE_FULL_PAUSE`.
pub(crate) struct WaitRoom {
    shared: Arc<Shared>,
    room: Arc<AtomicBool>,
}

impl WaitRoom {
    pub(crate) fn new(ns: Arc<Namespace>, index: usize, capacity: u32) -> Self {
        let shared = Arc::new(Shared::default());
        let room = Arc::new(AtomicBool::new(false));
        let (watch_shared, watch_room) = (shared.clone(), room.clone());
        std::thread::Builder::new()
            .name("latchkey-room".into())
            .spawn(move || {
                let rec = ns.rec(index, capacity);
                while !watch_shared.stop.load(Ordering::Acquire) {
                    // The queue may be full of the dead: free their places.
                    rec.repair_if_dead();
                    if rec.has_free_waiter_slot() {
                        watch_room.store(true, Ordering::Release);
                        if let Some(waker) = watch_shared.waker.lock().expect("waker lock").take() {
                            waker.wake();
                        }
                        return;
                    }
                    std::thread::sleep(QUEUE_FULL_PAUSE);
                }
            })
            .expect("cannot start a latchkey wait thread");
        WaitRoom { shared, room }
    }
}

impl Future for WaitRoom {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.room.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        *self.shared.waker.lock().expect("waker lock") = Some(cx.waker().clone());
        if self.room.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

impl Drop for WaitRoom {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
    }
}
