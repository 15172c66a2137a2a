//! Signals that `run` passes on to the command's group, caught into a flag set and a
//! self-pipe, so that the supervising loop sleeps until one comes (or a child ends).

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::time::Duration;

/// The signals passed on to the command's group.
pub const FORWARDED: [libc::c_int; 4] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT];

/// Signals caught and not yet taken, one bit each.
static PENDING: AtomicU64 = AtomicU64::new(0);
/// The write end of the self-pipe (non-blocking), -1 before `catch`.
static WAKE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn caught(signal: libc::c_int) {
    PENDING.fetch_or(1 << signal, Ordering::SeqCst);
    let fd = WAKE.load(Ordering::SeqCst);
    if fd >= 0 {
        // SAFETY: write is async-signal-safe; one byte from a static. A full pipe already
        // wakes the reader.
        unsafe { libc::write(fd, b"!".as_ptr().cast(), 1) };
    }
}

/// The forwarded signals and SIGCHLD, caught from `catch` on.
pub struct Signals {
    read: OwnedFd,
    _write: OwnedFd,
}

impl Signals {
    /// Installs the handlers (for the whole process: once).
    pub fn catch() -> io::Result<Signals> {
        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two new descriptors into the array.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } == -1 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both descriptors are new and owned by nothing else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        WAKE.store(write.as_raw_fd(), Ordering::SeqCst);
        for signal in FORWARDED.into_iter().chain([libc::SIGCHLD]) {
            // SAFETY: installs a handler that only makes async-signal-safe calls; the
            // action is a zeroed struct with the handler and flags filled in.
            unsafe {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = caught as *const () as libc::sighandler_t;
                action.sa_flags = libc::SA_RESTART;
                libc::sigemptyset(&mut action.sa_mask);
                if libc::sigaction(signal, &action, std::ptr::null_mut()) == -1 {
                    return Err(io::Error::last_os_error());
                }
            }
        }
        Ok(Signals { read, _write: write })
    }

    /// The signals caught since the last call, SIGCHLD included.
    pub fn take(&self) -> Vec<libc::c_int> {
        let pending = PENDING.swap(0, Ordering::SeqCst);
        (1..64).filter(|&signal| pending & (1 << signal) != 0).collect()
    }

    /// Sleeps until a signal is caught, or for `timeout`.
    pub fn wait(&self, timeout: Duration) {
        use rustix::event::{poll, PollFd, PollFlags};
        if PENDING.load(Ordering::SeqCst) == 0 {
            let timeout =
                rustix::time::Timespec { tv_sec: timeout.as_secs() as i64, tv_nsec: timeout.subsec_nanos() as i64 };
            let mut fds = [PollFd::new(&self.read, PollFlags::IN)];
            let _ = poll(&mut fds, Some(&timeout));
        }
        let mut drain = [0u8; 64];
        while matches!(rustix::io::read(self.read.as_fd(), &mut drain), Ok(n) if n > 0) {}
    }
}
