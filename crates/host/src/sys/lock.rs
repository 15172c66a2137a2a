//! Open-file-description (OFD) byte locks: how a process shows it is alive. A lock is
//! held for as long as its open file description lives, and the kernel drops it when the
//! process dies, however it dies.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// Takes a write lock on byte `offset` of the file. Returns `false` if someone else holds it.
pub(crate) fn try_lock_byte(fd: BorrowedFd<'_>, offset: u64) -> io::Result<bool> {
    let mut lock = byte_lock(libc::F_WRLCK, offset, 1);
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

/// Whether another open file description holds a lock on any byte of `offset..offset+len`
/// (`len` 0: to the end): whether a process that took one is still alive. Our own locks
/// do not count.
pub(crate) fn locked_by_other(fd: BorrowedFd<'_>, offset: u64, len: u64) -> io::Result<bool> {
    let mut lock = byte_lock(libc::F_WRLCK, offset, len);
    // SAFETY: as in `try_lock_byte`; F_OFD_GETLK writes the conflicting lock, if any,
    // into `lock`.
    let result = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_OFD_GETLK, &mut lock) };
    if result != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(lock.l_type != libc::F_UNLCK as libc::c_short)
}

fn byte_lock(kind: libc::c_int, offset: u64, len: u64) -> libc::flock {
    // SAFETY: `flock` is plain data; all zeroes is a valid value, and OFD locks require
    // `l_pid` to be 0.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = kind as libc::c_short;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    lock.l_start = offset as libc::off_t;
    lock.l_len = len as libc::off_t;
    lock
}

/// Takes a shared BSD lock (`flock(LOCK_SH)`) on `fd` without waiting; `false` if an
/// exclusive one is held. systemd-tmpfiles does not age out a directory that is locked.
pub(crate) fn share_flock(fd: BorrowedFd<'_>) -> io::Result<bool> {
    match rustix::fs::flock(fd, rustix::fs::FlockOperation::NonBlockingLockShared) {
        Ok(()) => Ok(true),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(false),
        Err(e) => Err(e.into()),
    }
}
