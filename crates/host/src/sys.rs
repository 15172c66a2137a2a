//! The one door to the operating system: open-file-description locks, futexes, the
//! monotonic clock. Linux only; another platform adds its own version of this module.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::AtomicU32;
use std::time::Duration;

use rustix::thread::futex;

/// Takes a write lock on byte `offset` of the file for as long as the open file
/// description lives (the kernel drops it when the process dies, however it dies).
/// Returns `false` if someone else holds it.
pub(crate) fn try_lock_byte(fd: BorrowedFd<'_>, offset: u64) -> io::Result<bool> {
    let mut lock = byte_lock(libc::F_WRLCK, offset);
    // SAFETY: `fd` is an open descriptor and `lock` a valid `struct flock` that lives
    // across the call; F_OFD_SETLK only reads it.
    let result = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_OFD_SETLK, &mut lock) };
    if result == 0 {
        return Ok(true);
    }
    match io::Error::last_os_error() {
        e if matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EACCES)) => Ok(false),
        e => Err(e),
    }
}

/// Blocks until the write lock on byte `offset` is ours (see [`try_lock_byte`]).
pub(crate) fn lock_byte(fd: BorrowedFd<'_>, offset: u64) -> io::Result<()> {
    let mut lock = byte_lock(libc::F_WRLCK, offset);
    loop {
        // SAFETY: as in `try_lock_byte`.
        let result = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_OFD_SETLKW, &mut lock) };
        if result == 0 {
            return Ok(());
        }
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
}

/// Gives up the lock on byte `offset`.
pub(crate) fn unlock_byte(fd: BorrowedFd<'_>, offset: u64) -> io::Result<()> {
    let mut lock = byte_lock(libc::F_UNLCK, offset);
    // SAFETY: as in `try_lock_byte`.
    let result = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_OFD_SETLK, &mut lock) };
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether another open file description holds a lock on byte `offset`: that is, whether
/// the process that took it is still alive. Our own locks do not count.
pub(crate) fn byte_locked_by_other(fd: BorrowedFd<'_>, offset: u64) -> io::Result<bool> {
    let mut lock = byte_lock(libc::F_WRLCK, offset);
    // SAFETY: as in `try_lock_byte`; F_OFD_GETLK writes the conflicting lock, if any,
    // into `lock`.
    let result = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_OFD_GETLK, &mut lock) };
    if result != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(lock.l_type != libc::F_UNLCK as libc::c_short)
}

fn byte_lock(kind: libc::c_int, offset: u64) -> libc::flock {
    // SAFETY: `flock` is plain data; all zeroes is a valid value, and OFD locks require
    // `l_pid` to be 0.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = kind as libc::c_short;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    lock.l_start = offset as libc::off_t;
    lock.l_len = 1;
    lock
}

/// Sleeps while `word` holds `expected`, at most `timeout` (`None`: no limit), until a
/// [`wake`] on it from any process that maps the same file. Spurious returns are possible.
pub(crate) fn wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
    let timeout = timeout.map(timespec);
    // Shared (not PRIVATE): the word lives in a file mapping shared between processes.
    // Every outcome (woken, timed out, value changed, interrupted) means: look again.
    let _ = futex::wait(word, futex::Flags::empty(), expected, timeout.as_ref());
}

/// A futex word for [`wait_any`], and the value to sleep while it holds. (Shared, not
/// private, like [`wait`] and [`wake`].)
pub(crate) struct Waited<'a> {
    pub word: &'a AtomicU32,
    pub expected: u32,
}

/// Sleeps while every word holds its expected value, at most `timeout` (`None`: no
/// limit), until a [`wake`] on any of them. At most 128 words. Spurious returns are
/// possible.
pub(crate) fn wait_any(words: &[Waited<'_>], timeout: Option<Duration>) {
    use rustix::thread::futex::{waitv, Wait, WaitFlags, WaitPtr, WaitvFlags};
    let waits: Vec<Wait> = words
        .iter()
        .map(|w| {
            let mut wait = Wait::new();
            wait.val = u64::from(w.expected);
            wait.uaddr = WaitPtr::new(w.word.as_ptr().cast());
            wait.flags = WaitFlags::SIZE_U32;
            wait
        })
        .collect();
    // The limit is a point on the monotonic clock.
    let until = timeout.map(|t| timespec(Duration::from_nanos(now_ns()) + t));
    let _ = waitv(&waits, WaitvFlags::empty(), until.as_ref(), rustix::time::ClockId::Monotonic);
}

/// Whether [`wait_any`] works here: the kernel has `futex_waitv` (Linux 5.16 and later)
/// and nothing (a seccomp filter) refuses it.
pub(crate) fn has_wait_any() -> bool {
    use rustix::thread::futex::{waitv, Wait, WaitFlags, WaitPtr, WaitvFlags};
    let word = AtomicU32::new(0);
    let mut wait = Wait::new();
    wait.val = 1; // not the word's value: a working call returns at once
    wait.uaddr = WaitPtr::new(word.as_ptr().cast());
    wait.flags = WaitFlags::SIZE_U32;
    matches!(waitv(&[wait], WaitvFlags::empty(), None, rustix::time::ClockId::Monotonic), Err(rustix::io::Errno::AGAIN))
}

fn timespec(duration: Duration) -> rustix::time::Timespec {
    rustix::time::Timespec {
        tv_sec: duration.as_secs().min(i64::MAX as u64) as i64,
        tv_nsec: i64::from(duration.subsec_nanos()),
    }
}

/// Wakes up to `count` processes sleeping in [`wait`] on `word`.
pub(crate) fn wake(word: &AtomicU32, count: u32) {
    let _ = futex::wake(word, futex::Flags::empty(), count);
}

/// Wakes every process sleeping in [`wait`] on `word`. (The kernel reads the count as a
/// signed int: `u32::MAX` would be -1, and wake one.)
pub(crate) fn wake_all(word: &AtomicU32) {
    wake(word, i32::MAX as u32);
}

/// A descriptor that becomes readable when process `pid` (of our pid namespace) exits:
/// a pidfd. `None` if there is no such process, or the kernel has no pidfds.
pub(crate) fn exit_fd(pid: u32) -> Option<OwnedFd> {
    let pid = rustix::process::Pid::from_raw(i32::try_from(pid).ok()?)?;
    rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok()
}

/// Sleeps until one of `fds` is readable; returns which ones are.
pub(crate) fn wait_readable(fds: &[BorrowedFd<'_>]) -> Vec<bool> {
    use rustix::event::{poll, PollFd, PollFlags};
    let mut polled: Vec<PollFd<'_>> = fds.iter().map(|fd| PollFd::from_borrowed_fd(*fd, PollFlags::IN)).collect();
    loop {
        match poll(&mut polled, None) {
            Ok(_) => return polled.iter().map(|p| !p.revents().is_empty()).collect(),
            Err(rustix::io::Errno::INTR) => continue,
            // Only a bad descriptor or no memory; report nothing ready, the caller loops.
            Err(_) => return vec![false; fds.len()],
        }
    }
}

/// Whether `fd` is readable now.
pub(crate) fn is_readable(fd: BorrowedFd<'_>) -> bool {
    use rustix::event::{poll, PollFd, PollFlags};
    let zero = timespec(Duration::ZERO);
    let mut polled = [PollFd::from_borrowed_fd(fd, PollFlags::IN)];
    matches!(poll(&mut polled, Some(&zero)), Ok(n) if n > 0)
}

/// A new event descriptor (an eventfd) for waking a thread blocked in [`wait_readable`].
pub(crate) fn event_fd() -> io::Result<OwnedFd> {
    use rustix::event::{eventfd, EventfdFlags};
    Ok(eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?)
}

/// Makes an event descriptor readable.
pub(crate) fn signal_event(fd: BorrowedFd<'_>) {
    let _ = rustix::io::write(fd, &1u64.to_ne_bytes());
}

/// Makes an event descriptor unreadable again.
pub(crate) fn clear_event(fd: BorrowedFd<'_>) {
    let _ = rustix::io::read(fd, &mut [0u8; 8]);
}

/// An identifier of this process's pid namespace (0 if unknown): pids, and so pidfds,
/// mean the same process only between processes of the same pid namespace.
pub(crate) fn pid_namespace() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self/ns/pid").map_or(0, |m| m.ino() as u32)
}

/// Nanoseconds on the monotonic clock, which every process of the machine shares.
pub(crate) fn now_ns() -> u64 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}
