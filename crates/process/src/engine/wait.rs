//! The future of one request: first poll queues it, later polls look for the grant.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::semaphore::{FairSemaphore, Queued};
use super::signal::Signal;
use crate::sync::Arc;

/// Waits for a grant of a [`FairSemaphore`]; see [`FairSemaphore::acquire`] and
/// [`FairSemaphore::cede`].
///
/// Resolves to `Some(token)` when granted, or `None` when a cede found nobody waiting.
#[must_use = "futures do nothing unless polled"]
#[derive(Debug)]
pub struct Wait<'a> {
    semaphore: &'a FairSemaphore,
    permits: u32,
    phase: Phase,
}

#[derive(Debug)]
enum Phase {
    /// Not polled yet; will ask for permits.
    Acquire,
    /// Not polled yet; holds permits and will cede them.
    Cede,
    /// In the queue.
    Waiting { ticket: u64, signal: Arc<Signal> },
    /// Resolved: nothing to undo on drop.
    Done,
}

impl<'a> Wait<'a> {
    pub(crate) fn acquire(semaphore: &'a FairSemaphore, permits: u32) -> Self {
        Wait { semaphore, permits, phase: Phase::Acquire }
    }

    pub(crate) fn cede(semaphore: &'a FairSemaphore, permits: u32) -> Self {
        Wait { semaphore, permits, phase: Phase::Cede }
    }
}

impl Future for Wait<'_> {
    type Output = Option<u64>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<u64>> {
        let this = self.get_mut();
        let queued = match &this.phase {
            Phase::Acquire => this.semaphore.enqueue(this.permits, cx.waker()),
            Phase::Cede => this.semaphore.requeue(this.permits, cx.waker()),
            Phase::Waiting { signal, .. } => match signal.register(cx.waker()) {
                Some(token) => Queued::Granted(token),
                None => return Poll::Pending,
            },
            Phase::Done => panic!("`Wait` polled after it resolved"),
        };
        match queued {
            Queued::Granted(token) => {
                this.phase = Phase::Done;
                Poll::Ready(Some(token))
            }
            Queued::Kept => {
                this.phase = Phase::Done;
                Poll::Ready(None)
            }
            Queued::Waiting { ticket, signal } => {
                this.phase = Phase::Waiting { ticket, signal };
                Poll::Pending
            }
        }
    }
}

impl Drop for Wait<'_> {
    fn drop(&mut self) {
        match std::mem::replace(&mut self.phase, Phase::Done) {
            Phase::Waiting { ticket, .. } => self.semaphore.cancel(ticket, self.permits),
            // A cede that never ran still holds the caller's permits.
            Phase::Cede => {
                let _ = self.semaphore.release(self.permits);
            }
            Phase::Acquire | Phase::Done => {}
        }
    }
}

// `Wait` holds only a shared reference and an `Arc`, so it is `Send` and
// `Unpin` by construction; the bounds test below pins that down.
#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    fn bounds<T: Send + Sync + Unpin>() {}
    #[test]
    fn wait_is_send_sync_unpin() {
        bounds::<Wait<'static>>();
        bounds::<FairSemaphore>();
    }
}
