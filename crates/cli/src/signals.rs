//! Signals that `run` passes on to the command's tree, caught into a flag set and a
//! self-pipe, so that the supervising loop sleeps until one comes.
//!
//! A signal that a terminal sent (Ctrl-C, Ctrl-\, a hangup) went to the whole foreground
//! job, the command included, from the kernel: it is not passed on again (but see
//! `run`: once the command has ended, it ends what the command left running). A signal
//! sent to `run` with kill(2) is passed on.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::time::Duration;

/// The signals passed on to the command's tree.
pub const FORWARDED: [libc::c_int; 4] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT];

/// Signals caught and not yet taken, one bit each.
static PENDING: AtomicU64 = AtomicU64::new(0);
/// Signals from the terminal caught and not yet taken, one bit each.
static FROM_TERMINAL: AtomicU64 = AtomicU64::new(0);
/// The write end of the self-pipe (non-blocking), -1 before `catch`.
static WAKE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn caught(signal: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo_t to an SA_SIGINFO handler.
    let from_terminal = !info.is_null() && unsafe { (*info).si_code } == libc::SI_KERNEL;
    let pending = if from_terminal { &FROM_TERMINAL } else { &PENDING };
    pending.fetch_or(1 << signal, Ordering::SeqCst);
    let fd = WAKE.load(Ordering::SeqCst);
    if fd >= 0 {
        // SAFETY: write is async-signal-safe; one byte from a static. A full pipe already
        // wakes the reader.
        unsafe { libc::write(fd, b"!".as_ptr().cast(), 1) };
    }
}

/// The forwarded signals, caught from `catch` on.
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
        for signal in FORWARDED {
            // SAFETY: reads and installs signal actions through zeroed structs; the
            // handler only makes async-signal-safe calls.
            unsafe {
                // A signal the caller ignores (nohup, a shell's background job) stays
                // ignored, here and in the command, as it would be without latchkey.
                let mut current: libc::sigaction = std::mem::zeroed();
                libc::sigaction(signal, std::ptr::null(), &mut current);
                if current.sa_sigaction == libc::SIG_IGN {
                    continue;
                }
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = caught as *const () as libc::sighandler_t;
                action.sa_flags = libc::SA_RESTART | libc::SA_SIGINFO;
                libc::sigemptyset(&mut action.sa_mask);
                if libc::sigaction(signal, &action, std::ptr::null_mut()) == -1 {
                    return Err(io::Error::last_os_error());
                }
            }
        }
        Ok(Signals { read, _write: write })
    }

    /// The signals to pass on, caught since the last call.
    pub fn take(&self) -> Vec<libc::c_int> {
        bits(PENDING.swap(0, Ordering::SeqCst))
    }

    /// The signals the terminal sent (to the whole job) since the last call.
    pub fn take_from_terminal(&self) -> Vec<libc::c_int> {
        bits(FROM_TERMINAL.swap(0, Ordering::SeqCst))
    }

    /// Sleeps until a signal is caught, `other` is readable, or `timeout` has passed.
    pub fn wait(&self, other: BorrowedFd<'_>, timeout: Duration) {
        use rustix::event::{poll, PollFd, PollFlags};
        if PENDING.load(Ordering::SeqCst) == 0 && FROM_TERMINAL.load(Ordering::SeqCst) == 0 {
            let timeout =
                rustix::time::Timespec { tv_sec: timeout.as_secs() as i64, tv_nsec: timeout.subsec_nanos() as i64 };
            let mut fds = [PollFd::new(&self.read, PollFlags::IN), PollFd::from_borrowed_fd(other, PollFlags::IN)];
            let _ = poll(&mut fds, Some(&timeout));
        }
        let mut drain = [0u8; 64];
        while matches!(rustix::io::read(self.read.as_fd(), &mut drain), Ok(n) if n > 0) {}
    }
}

fn bits(set: u64) -> Vec<libc::c_int> {
    (1..64).filter(|&signal| set & (1 << signal) != 0).collect()
}

/// Ends this process with `signal`, as if the signal had killed it (so that a shell
/// running `run` in a loop stops at Ctrl-C, as it does for the command itself).
pub fn die_of(signal: libc::c_int) {
    // SAFETY: restores the default action and sends the signal to this process.
    unsafe {
        libc::signal(signal, libc::SIG_DFL);
        libc::raise(signal);
    }
}
