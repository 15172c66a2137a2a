//! The meeting point of one waiter and whoever grants it.

use crate::sync::{AtomicU64, Ordering};

/// Lives inside a waiting future; set once by the granter, under the queue lock, with the
/// grant's fencing token, and read by the future without any lock. The waiter's waker
/// lives in the queue.
#[derive(Debug)]
pub(crate) struct Signal {
    /// 0 while pending, else the fencing token of the grant (tokens start at 1).
    token: AtomicU64,
}

impl Signal {
    pub(crate) fn new() -> Self {
        Signal { token: AtomicU64::new(0) }
    }

    /// The token of the grant, once granted.
    pub(crate) fn granted(&self) -> Option<u64> {
        match self.token.load(Ordering::Acquire) {
            0 => None,
            token => Some(token),
        }
    }

    /// Records the grant; the caller wakes the waiter once it lets go of the queue lock.
    pub(crate) fn grant(&self, token: u64) {
        debug_assert_ne!(token, 0);
        self.token.store(token, Ordering::Release);
    }
}
