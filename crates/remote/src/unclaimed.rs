//! A lease on its way from a scope's thread to the caller.

use std::sync::Arc;

use latchkey_model::{Lease, RawLock};

/// A lease on its way to the caller: given back (in the background) if the caller's
/// future is dropped before it takes it, wherever it is then (in the task, in the channel).
pub struct Unclaimed {
    lease: Option<Lease>,
    lock: Arc<dyn RawLock>,
}

impl Unclaimed {
    /// `lease`, granted by `lock`, until it is claimed.
    pub fn new(lease: Lease, lock: Arc<dyn RawLock>) -> Unclaimed {
        Unclaimed { lease: Some(lease), lock }
    }

    /// The lease, now the caller's.
    pub fn claim(mut self) -> Lease {
        self.lease.take().expect("claimed once")
    }
}

impl Drop for Unclaimed {
    fn drop(&mut self) {
        if let Some(lease) = self.lease.take() {
            self.lock.release_in_background(lease);
        }
    }
}
