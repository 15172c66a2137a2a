//! Which copy of the process this is: a child forked without exec has the memory of its
//! parent, but not its threads, and must not use its parent's connections. Scopes that
//! keep threads or connections note the copy that made them and compare.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Forks since this process (or the first of its ancestors that loaded latchkey) started.
static FORKS: AtomicU64 = AtomicU64::new(0);

extern "C" fn count_the_fork() {
    FORKS.fetch_add(1, Ordering::Relaxed);
}

/// This copy of the process: its pid and the forks counted in its line. It differs in a
/// child forked from the copy that read it, even one that reuses a pid of its ancestors
/// (pids are compared too, for children made by a raw `clone`, which runs no fork handler).
pub fn process_copy() -> (u32, u64) {
    static REGISTERED: AtomicBool = AtomicBool::new(false);
    if !REGISTERED.swap(true, Ordering::AcqRel) {
        // SAFETY: registers a handler that only increments an atomic, which is
        // async-signal-safe as a fork handler must be. (A fork between the flag and the
        // registration leaves the child uncounted: its pid still tells it apart.)
        unsafe { libc::pthread_atfork(None, None, Some(count_the_fork)) };
    }
    (std::process::id(), FORKS.load(Ordering::Acquire))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forked_child_is_another_copy() {
        let parent = process_copy();
        assert_eq!(process_copy(), parent);
        // SAFETY: the child only reads two atomics and a pid, then _exits with the answer.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let child = process_copy();
            let same = child == parent;
            let counted = child.1 == parent.1 + 1;
            // SAFETY: ends the child at once.
            unsafe { libc::_exit(if !same && counted { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: reaps our child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "the child is another copy, counted");
    }
}
