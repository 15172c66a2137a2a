//! The meeting point of one waiter and whoever grants it.

use std::task::Waker;

use crate::sync::{AtomicU64, Mutex, Ordering};

/// Set once by the granter (under the queue lock) with the grant's fencing token; read by
/// the waiting future.
#[derive(Debug)]
pub(crate) struct Signal {
    /// 0 while pending, else the fencing token of the grant (tokens start at 1).
    token: AtomicU64,
    waker: Mutex<Option<Waker>>,
}

impl Signal {
    pub(crate) fn new(waker: &Waker) -> Self {
        Signal { token: AtomicU64::new(0), waker: Mutex::new(Some(waker.clone())) }
    }

    /// Makes a signal that nobody else holds pending again, for a new waiter.
    pub(crate) fn reset(&mut self, waker: &Waker) {
        self.token = AtomicU64::new(0);
        self.waker = Mutex::new(Some(waker.clone()));
    }

    /// The token of the grant, once granted.
    pub(crate) fn granted(&self) -> Option<u64> {
        match self.token.load(Ordering::Acquire) {
            0 => None,
            token => Some(token),
        }
    }

    /// Records the grant. The caller wakes the waiter with [`wake`](Signal::wake) after
    /// it has let go of the queue lock.
    pub(crate) fn grant(&self, token: u64) {
        debug_assert_ne!(token, 0);
        self.token.store(token, Ordering::Release);
    }

    pub(crate) fn wake(&self) {
        let waker = self.waker.lock().take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Stores the waker of the latest poll, then reports whether the grant came.
    /// Checking after storing means a grant can never slip between the two unseen.
    pub(crate) fn register(&self, waker: &Waker) -> Option<u64> {
        {
            let mut slot = self.waker.lock();
            match &*slot {
                Some(current) if current.will_wake(waker) => {}
                _ => *slot = Some(waker.clone()),
            }
        }
        self.granted()
    }
}
