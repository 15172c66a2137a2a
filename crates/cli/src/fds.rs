//! Descriptors: close-on-exec pipes, and whether one is ready.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

/// A pipe whose ends are closed on exec: (read, write).
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?)
}

/// Whether `fd` is readable, or its writer gone (a pipe), or its process exited (a
/// pidfd), within `timeout` (zero: now).
pub fn ready(fd: impl AsFd, timeout: Duration) -> bool {
    use rustix::event::{poll, PollFd, PollFlags};
    let timeout = rustix::time::Timespec { tv_sec: timeout.as_secs() as i64, tv_nsec: timeout.subsec_nanos() as i64 };
    let mut fds = [PollFd::new(&fd, PollFlags::IN)];
    matches!(poll(&mut fds, Some(&timeout)), Ok(n) if n > 0)
}
