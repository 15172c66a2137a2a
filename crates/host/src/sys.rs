//! The one door to the operating system: open-file-description locks, futexes, the
//! monotonic clock. Linux only; another platform adds its own version of this module.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
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

/// Sleeps while `word` holds `expected`, at most `timeout`, until a [`wake`] on it from
/// any process that maps the same file. Spurious returns are possible.
pub(crate) fn wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    let timeout = rustix::time::Timespec {
        tv_sec: timeout.as_secs().min(i64::MAX as u64) as i64,
        tv_nsec: i64::from(timeout.subsec_nanos()),
    };
    // Shared (not PRIVATE): the word lives in a file mapping shared between processes.
    // Every outcome (woken, timed out, value changed, interrupted) means: look again.
    let _ = futex::wait(word, futex::Flags::empty(), expected, Some(&timeout));
}

/// Wakes up to `count` processes sleeping in [`wait`] on `word`.
pub(crate) fn wake(word: &AtomicU32, count: u32) {
    let _ = futex::wake(word, futex::Flags::empty(), count);
}

/// Nanoseconds on the monotonic clock, which every process of the machine shares.
pub(crate) fn now_ns() -> u64 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}
