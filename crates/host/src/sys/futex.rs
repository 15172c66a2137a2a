//! Futexes on words of the shared mapping: sleeping until another process changes a word
//! and wakes its sleepers. Under `cfg(loom)`, a model of the same on loom's primitives.

use crate::sync::atomic::AtomicU32;

/// A word to sleep on, with the value to sleep while it holds.
#[derive(Clone, Copy)]
pub(crate) struct Sleep<'a> {
    pub word: &'a AtomicU32,
    pub expected: u32,
}

#[cfg(not(loom))]
mod imp {
    use std::sync::atomic::AtomicU32;
    use std::sync::OnceLock;
    use std::time::Duration;

    use rustix::thread::futex;

    use super::Sleep;

    /// Sleeps while `on.word` holds `on.expected` (and, if given, `alarm.word` holds
    /// `alarm.expected`), at most `timeout`, until a [`wake`] of either word. `on` lives in
    /// the shared mapping; `alarm` is private to the process (the namespace's alarm,
    /// rung when the namespace is lost: a word of a truncated mapping cannot be woken).
    /// Without `futex_waitv` (Linux before 5.16) the alarm is not watched. Spurious
    /// returns are possible: every outcome means "look again".
    pub(crate) fn sleep(on: Sleep<'_>, alarm: Option<Sleep<'_>>, timeout: Option<Duration>) {
        match alarm.filter(|_| has_waitv()) {
            Some(alarm) => sleep_on_two(on, alarm, timeout),
            None => {
                let timeout = timeout.map(timespec);
                // Shared (not PRIVATE): the word lives in a file mapping shared between processes.
                let _ = futex::wait(on.word, futex::Flags::empty(), on.expected, timeout.as_ref());
            }
        }
    }

    fn sleep_on_two(on: Sleep<'_>, alarm: Sleep<'_>, timeout: Option<Duration>) {
        use rustix::thread::futex::{waitv, Wait, WaitFlags, WaitPtr, WaitvFlags};
        let wait = |sleep: Sleep<'_>, flags: WaitFlags| {
            let mut wait = Wait::new();
            wait.val = u64::from(sleep.expected);
            wait.uaddr = WaitPtr::new(sleep.word.as_ptr().cast());
            wait.flags = flags;
            wait
        };
        let waits = [wait(on, WaitFlags::SIZE_U32), wait(alarm, WaitFlags::SIZE_U32 | WaitFlags::PRIVATE)];
        // The limit is a point on the monotonic clock.
        let until = timeout.map(|t| timespec(Duration::from_nanos(crate::sys::now_ns()) + t));
        let _ = waitv(&waits, WaitvFlags::empty(), until.as_ref(), rustix::time::ClockId::Monotonic);
    }

    /// Whether `futex_waitv` works here (Linux 5.16 and later, and no seccomp filter
    /// refuses it).
    pub(crate) fn has_waitv() -> bool {
        static WORKS: OnceLock<bool> = OnceLock::new();
        *WORKS.get_or_init(|| {
            use rustix::thread::futex::{waitv, Wait, WaitFlags, WaitPtr, WaitvFlags};
            let word = AtomicU32::new(0);
            let mut wait = Wait::new();
            wait.val = 1; // not the word's value: a working call returns at once
            wait.uaddr = WaitPtr::new(word.as_ptr().cast());
            wait.flags = WaitFlags::SIZE_U32 | WaitFlags::PRIVATE;
            matches!(
                waitv(&[wait], WaitvFlags::empty(), None, rustix::time::ClockId::Monotonic),
                Err(rustix::io::Errno::AGAIN)
            )
        })
    }

    /// Wakes every thread sleeping on `word`, in any process. (The kernel reads the count
    /// as a signed int: `u32::MAX` would be -1, and wake one.)
    pub(crate) fn wake_all(word: &AtomicU32) {
        let _ = futex::wake(word, futex::Flags::empty(), i32::MAX as u32);
    }

    /// Wakes threads of this process sleeping on the private `word` (an alarm).
    pub(crate) fn wake_private(word: &AtomicU32) {
        let _ = futex::wake(word, futex::Flags::PRIVATE, i32::MAX as u32);
    }

    fn timespec(duration: Duration) -> rustix::time::Timespec {
        rustix::time::Timespec {
            tv_sec: duration.as_secs().min(i64::MAX as u64) as i64,
            tv_nsec: i64::from(duration.subsec_nanos()),
        }
    }
}

#[cfg(loom)]
mod imp {
    //! A futex for loom: one mutex and condition variable for every word. A sleeper
    //! re-checks its word under the mutex, and a waker takes the mutex before notifying,
    //! so a wake between the check and the sleep is not lost.
    use std::time::Duration;

    use loom::sync::{Condvar, Mutex};

    use super::Sleep;
    use crate::sync::atomic::{AtomicU32, Ordering};

    loom::lazy_static! {
        static ref FUTEX: (Mutex<()>, Condvar) = (Mutex::new(()), Condvar::new());
    }

    pub(crate) fn sleep(on: Sleep<'_>, alarm: Option<Sleep<'_>>, timeout: Option<Duration>) {
        // A timed sleep only yields: loom has no clock, and the caller looks again.
        if timeout.is_some() {
            loom::thread::yield_now();
            return;
        }
        let (mutex, condvar) = &*FUTEX;
        let guard = mutex.lock().unwrap();
        let unchanged = on.word.load(Ordering::SeqCst) == on.expected
            && alarm.is_none_or(|a| a.word.load(Ordering::SeqCst) == a.expected);
        if unchanged {
            drop(condvar.wait(guard).unwrap());
        }
    }

    pub(crate) fn wake_all(_word: &AtomicU32) {
        let (mutex, condvar) = &*FUTEX;
        drop(mutex.lock().unwrap());
        condvar.notify_all();
    }

    pub(crate) fn wake_private(word: &AtomicU32) {
        wake_all(word);
    }
}

#[cfg(not(loom))]
pub(crate) use imp::has_waitv;
pub(crate) use imp::{sleep, wake_all, wake_private};
