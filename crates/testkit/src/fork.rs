//! A job run in a child forked (without exec) from the test process, for what a scope does
//! in a copy of the process that opened it.

use std::io::Read as _;
use std::os::fd::FromRawFd;
use std::time::Duration;

/// Runs `job` in a forked child and returns what it returned, or `None` when it answered
/// nothing within `limit` (a hang; the child is killed then).
///
/// The child runs only `job` and then ends with `_exit`, so nothing of the parent is
/// dropped there but what `job` drops itself. Values that `job` borrows are the child's
/// copies: `Option::take` in the child leaves the parent's value in place.
pub fn in_a_forked_child(limit: Duration, job: impl FnOnce() -> String) -> Option<String> {
    let mut fds = [0i32; 2];
    // SAFETY: pipe(2) into an array of two descriptors.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0, "pipe");
    // SAFETY: the child runs `job`, writes to the pipe, then _exits.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork");
    if pid == 0 {
        // A panic must not unwind into the child's copy of the test harness.
        let line = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job))
            .unwrap_or_else(|_| "the job panicked in the child".to_owned());
        // SAFETY: writes our buffer to the pipe, then ends the child at once.
        unsafe {
            libc::write(fds[1], line.as_ptr().cast(), line.len());
            libc::_exit(0);
        }
    }
    // SAFETY: our write end, closed so that the child's exit ends the pipe.
    unsafe { libc::close(fds[1]) };
    // SAFETY: `fds[0]` is ours, owned by the File from here.
    let mut pipe = unsafe { std::fs::File::from_raw_fd(fds[0]) };
    let mut ready = libc::pollfd { fd: fds[0], events: libc::POLLIN, revents: 0 };
    let deadline = std::time::Instant::now() + limit;
    let answered = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let millis = i32::try_from(left.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: polls one descriptor of ours.
        let polled = unsafe { libc::poll(&mut ready, 1, millis) };
        if polled >= 0 || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            break polled == 1;
        }
    };
    let mut said = String::new();
    if answered {
        pipe.read_to_string(&mut said).expect("read the child's answer");
    }
    // SAFETY: plain system calls on our own child.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
    answered.then_some(said)
}
