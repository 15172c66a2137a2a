//! Deadlines without an async runtime: one timer thread for the process, and a future
//! that ends a wait with a `Timeout` error when its deadline passes.
//!
//! Every scope's acquire carries its deadline (see [`RawLock::acquire`](crate::RawLock::acquire));
//! [`with_deadline`] is how a scope whose waiting is a plain future honours it, so that
//! `lock_timeout` needs no Tokio time driver from the user.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use crate::{process_copy, Error, Result};

/// The sleeping wakers, by deadline; one thread wakes each when its deadline passes.
struct Timers {
    /// The copy of the process whose thread serves them (see [`process_copy`]): a child
    /// forked from it has no such thread.
    copy: (u32, u64),
    due: Mutex<BTreeMap<(Instant, u64), Waker>>,
    changed: Condvar,
    /// Another thread's timers were published first: the thread ends.
    retired: AtomicBool,
}

/// This process's timers, their thread started on first use. A child forked after they
/// started starts its own (the parent's thread is not in the child, and their lock may
/// have been held at the fork): no lock guards the choice, only an atomic pointer.
fn timers() -> &'static Timers {
    static CURRENT: AtomicPtr<Timers> = AtomicPtr::new(std::ptr::null_mut());
    let copy = process_copy();
    loop {
        let current = CURRENT.load(Ordering::Acquire);
        // SAFETY: CURRENT is null or a leaked `Timers`, never freed.
        if let Some(timers) = unsafe { current.as_ref() }.filter(|timers| timers.copy == copy) {
            return timers;
        }
        // Started before they are published: published timers always have a thread.
        let fresh: &'static Timers = Box::leak(Box::new(Timers {
            copy,
            due: Mutex::default(),
            changed: Condvar::new(),
            retired: AtomicBool::new(false),
        }));
        std::thread::Builder::new()
            .name("latchkey-timer".into())
            .spawn(move || fresh.run())
            .expect("cannot start latchkey's timer thread");
        let published = std::ptr::from_ref(fresh).cast_mut();
        if CURRENT.compare_exchange(current, published, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            return fresh;
        }
        // Another thread's won: this thread ends (its few bytes stay leaked).
        fresh.retired.store(true, Ordering::Release);
        let _due = fresh.due.lock().unwrap_or_else(|e| e.into_inner());
        fresh.changed.notify_one();
    }
}

impl Timers {
    fn run(&self) {
        let mut due = self.due.lock().unwrap_or_else(|e| e.into_inner());
        while !self.retired.load(Ordering::Acquire) {
            let now = Instant::now();
            while let Some(entry) = due.first_entry() {
                if entry.key().0 > now {
                    break;
                }
                entry.remove().wake();
            }
            due = match due.keys().next() {
                Some(&(at, _)) => self.changed.wait_timeout(due, at - now).unwrap_or_else(|e| e.into_inner()).0,
                None => self.changed.wait(due).unwrap_or_else(|e| e.into_inner()),
            };
        }
    }
}

/// A future that completes at `deadline`.
#[derive(Debug)]
pub struct Sleep {
    deadline: Instant,
    id: u64,
    registered: bool,
}

/// Completes at `deadline`, on any executor (or none: see [`block_on_until`](crate::block_on_until)).
pub fn sleep_until(deadline: Instant) -> Sleep {
    static NEXT_ID: AtomicU64 = AtomicU64::new(0);
    Sleep { deadline, id: NEXT_ID.fetch_add(1, Ordering::Relaxed), registered: false }
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.deadline {
            return Poll::Ready(());
        }
        let timers = timers();
        let mut due = timers.due.lock().unwrap_or_else(|e| e.into_inner());
        let key = (self.deadline, self.id);
        let first = due.keys().next().is_none_or(|first| key <= *first);
        due.insert(key, cx.waker().clone());
        self.registered = true;
        drop(due);
        if first {
            timers.changed.notify_one();
        }
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if self.registered {
            let mut due = timers().due.lock().unwrap_or_else(|e| e.into_inner());
            due.remove(&(self.deadline, self.id));
        }
    }
}

/// Awaits `wait`, but at `deadline` (if one is given) drops it and fails with the error
/// `timeout` makes. Dropping `wait` is how a cancel-safe wait withdraws its request.
pub async fn with_deadline<T>(
    wait: impl Future<Output = Result<T>>,
    deadline: Option<Instant>,
    timeout: impl FnOnce() -> Error,
) -> Result<T> {
    let Some(deadline) = deadline else {
        return wait.await;
    };
    let mut wait = std::pin::pin!(wait);
    let mut sleep = sleep_until(deadline);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(output) = wait.as_mut().poll(cx) {
            return Poll::Ready(Some(output));
        }
        match Pin::new(&mut sleep).poll(cx) {
            Poll::Ready(()) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
    .unwrap_or_else(|| Err(timeout()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{block_on_until, ErrorKind};
    use std::time::Duration;

    #[test]
    fn sleeps_until_the_deadline_on_no_runtime() {
        let start = Instant::now();
        block_on_until(sleep_until(start + Duration::from_millis(30)), None).unwrap();
        assert!(start.elapsed() >= Duration::from_millis(30));
    }

    #[test]
    fn an_earlier_sleep_registered_later_still_wakes_first() {
        let start = Instant::now();
        let late = std::thread::spawn(move || block_on_until(sleep_until(start + Duration::from_secs(30)), None));
        std::thread::sleep(Duration::from_millis(20));
        block_on_until(sleep_until(start + Duration::from_millis(40)), None).unwrap();
        assert!(start.elapsed() < Duration::from_secs(30));
        drop(late);
    }

    #[test]
    fn with_deadline_fails_a_pending_wait_and_passes_a_ready_one() {
        let deadline = Some(Instant::now() + Duration::from_millis(20));
        let timeout = || Error::new(ErrorKind::Timeout, "late");
        let pending = with_deadline(std::future::pending::<Result<()>>(), deadline, timeout);
        assert_eq!(block_on_until(pending, None).unwrap().unwrap_err().kind(), ErrorKind::Timeout);
        let ready = with_deadline(async { Ok(5) }, deadline, timeout);
        assert_eq!(block_on_until(ready, None).unwrap().unwrap(), 5);
    }
}
