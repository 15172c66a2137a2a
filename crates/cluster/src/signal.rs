//! A one-shot flag that tasks can wait for.

use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;

/// Set once, never cleared; [`wait`](Signal::wait) returns once it is set.
#[derive(Default)]
pub(crate) struct Signal {
    fired: AtomicBool,
    notify: Notify,
}

impl Signal {
    /// Sets the flag and wakes every waiter; true if this call set it.
    pub(crate) fn fire(&self) -> bool {
        let first = !self.fired.swap(true, Ordering::AcqRel);
        if first {
            self.notify.notify_waiters();
        }
        first
    }

    /// Whether the flag is set.
    pub(crate) fn is_fired(&self) -> bool {
        self.fired.load(Ordering::Acquire)
    }

    /// Waits until the flag is set. Cancel safe.
    pub(crate) async fn wait(&self) {
        loop {
            // A `Notified` receives `notify_waiters` from its creation on, so a `fire`
            // between the check and the await is not missed.
            let notified = self.notify.notified();
            if self.is_fired() {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn wait_returns_after_fire() {
        let signal = Arc::new(Signal::default());
        let waiter = tokio::spawn({
            let signal = signal.clone();
            async move { signal.wait().await }
        });
        tokio::task::yield_now().await;
        assert!(signal.fire());
        assert!(!signal.fire(), "only the first fire counts");
        waiter.await.unwrap();
        signal.wait().await; // already fired: returns at once
        assert!(signal.is_fired());
    }
}
