//! The future of one request: first poll queues it, later polls look for the grant.

use std::future::Future;
use std::marker::PhantomPinned;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::semaphore::{FairSemaphore, Queued};
use super::signal::Signal;

/// Waits for a grant of a [`FairSemaphore`]; see [`FairSemaphore::acquire`] and
/// [`FairSemaphore::cede`].
///
/// Resolves to `Some(token)` when granted, or `None` when a cede found nobody waiting.
///
/// While queued, the semaphore's queue points at the future's [`Signal`], so the future
/// is `!Unpin`; dropping it withdraws the request under the queue lock.
#[must_use = "futures do nothing unless polled"]
#[derive(Debug)]
pub struct Wait<'a> {
    semaphore: &'a FairSemaphore,
    permits: u32,
    phase: Phase,
    signal: Signal,
    _pinned: PhantomPinned,
}

#[derive(Debug)]
enum Phase {
    /// Not polled yet; will ask for permits.
    Acquire,
    /// Not polled yet; holds permits and will cede them.
    Cede,
    /// In the queue, under this ticket.
    Waiting { ticket: u64 },
    /// Resolved: nothing to undo on drop.
    Done,
}

impl<'a> Wait<'a> {
    pub(crate) fn acquire(semaphore: &'a FairSemaphore, permits: u32) -> Self {
        Wait { semaphore, permits, phase: Phase::Acquire, signal: Signal::new(), _pinned: PhantomPinned }
    }

    pub(crate) fn cede(semaphore: &'a FairSemaphore, permits: u32) -> Self {
        Wait { semaphore, permits, phase: Phase::Cede, signal: Signal::new(), _pinned: PhantomPinned }
    }
}

impl Future for Wait<'_> {
    type Output = Option<u64>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<u64>> {
        // SAFETY: nothing is moved out of `this`; the signal stays where it is, which is
        // what the queue's pointer to it relies on.
        let this = unsafe { self.get_unchecked_mut() };
        let queued = match this.phase {
            Phase::Acquire => this.semaphore.enqueue(this.permits, cx.waker(), &this.signal),
            Phase::Cede => this.semaphore.requeue(this.permits, cx.waker(), &this.signal),
            Phase::Waiting { ticket } => {
                match this.signal.granted().or_else(|| this.semaphore.repoll(ticket, &this.signal, cx.waker())) {
                    Some(token) => Queued::Granted(token),
                    None => return Poll::Pending,
                }
            }
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
            Queued::Waiting { ticket } => {
                this.phase = Phase::Waiting { ticket };
                Poll::Pending
            }
        }
    }
}

impl Drop for Wait<'_> {
    fn drop(&mut self) {
        match self.phase {
            // Withdraws the queue's pointer to `self.signal` before it goes away.
            Phase::Waiting { ticket } => self.semaphore.cancel(ticket, self.permits),
            // A cede that never ran still holds the caller's permits.
            Phase::Cede => {
                let _ = self.semaphore.release(self.permits);
            }
            Phase::Acquire | Phase::Done => {}
        }
    }
}

// `Wait` is `Send` and `Sync`: it holds a shared reference and atomics.
#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    fn bounds<T: Send + Sync>() {}
    #[test]
    fn wait_is_send_and_sync() {
        bounds::<Wait<'static>>();
        bounds::<FairSemaphore>();
    }
}
