//! Running a future to completion on the current thread, with an optional deadline.
//!
//! This is how a scope whose waiting is a future offers a blocking API without asking
//! the user for an async runtime.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};
use std::time::Instant;

struct ThreadWaker(Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// Polls `future` on this thread, parking between polls, until it completes or
/// `deadline` passes. Returns `None` on timeout, after dropping the future.
pub fn block_on_until<F: Future>(future: F, deadline: Option<Instant>) -> Option<F::Output> {
    let mut future = pin!(future);
    let waker = Waker::from(Arc::new(ThreadWaker(thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return Some(output);
        }
        match deadline {
            None => thread::park(),
            Some(deadline) => {
                let now = Instant::now();
                if now >= deadline {
                    return None;
                }
                thread::park_timeout(deadline - now);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn completes_ready_future() {
        assert_eq!(block_on_until(async { 7 }, None), Some(7));
    }

    #[test]
    fn times_out_on_pending_future() {
        let deadline = Instant::now() + Duration::from_millis(20);
        assert_eq!(block_on_until(std::future::pending::<()>(), Some(deadline)), None);
        assert!(Instant::now() >= deadline);
    }
}
