//! Watching other processes and files: pidfds, an event descriptor, inotify, `poll`; the
//! pid namespace; the clocks.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

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
    let zero = rustix::time::Timespec { tv_sec: 0, tv_nsec: 0 };
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

/// An inotify descriptor (non-blocking) that becomes readable when the file at `file` is
/// changed in size, attributes or links, removed or moved, or when the directory `dir`
/// is removed or moved or an entry in it is replaced. `None` where inotify is not
/// available (or its per-user limit is reached).
pub(crate) fn watch_paths(dir: &Path, file: &Path) -> Option<OwnedFd> {
    use rustix::fs::inotify::{add_watch, init, CreateFlags, WatchFlags};
    let fd = init(CreateFlags::CLOEXEC | CreateFlags::NONBLOCK).ok()?;
    let on_file = WatchFlags::MODIFY | WatchFlags::ATTRIB | WatchFlags::DELETE_SELF | WatchFlags::MOVE_SELF;
    let on_dir = WatchFlags::DELETE_SELF | WatchFlags::MOVE_SELF | WatchFlags::MOVED_TO | WatchFlags::CREATE;
    add_watch(&fd, file, on_file | WatchFlags::DONT_FOLLOW).ok()?;
    add_watch(&fd, dir, on_dir | WatchFlags::DONT_FOLLOW | WatchFlags::ONLYDIR).ok()?;
    Some(fd)
}

/// Reads and forgets every event waiting on an inotify (or any non-blocking) descriptor.
pub(crate) fn drain(fd: BorrowedFd<'_>) {
    let mut buffer = [0u8; 4096];
    while matches!(rustix::io::read(fd.as_fd(), &mut buffer), Ok(n) if n > 0) {}
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

/// Nanoseconds on the coarse monotonic clock (a few milliseconds' resolution, and a
/// fraction of the cost): for "held for how long", which `inspect` shows.
pub(crate) fn coarse_now_ns() -> u64 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::MonotonicCoarse);
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

/// Nanoseconds since the Unix epoch, on the wall clock.
pub(crate) fn wall_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// The effective user id.
pub(crate) fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}
