//! The threads that serve the waits of a namespace (the watcher of dependencies, the
//! multiplexer of async waits) are started at the first wait, and a failure to start
//! them is ignored (`let _ = std::thread::Builder::spawn(...)` in `wait/watch.rs` and
//! `wait/mux.rs`). A process that cannot start a thread (a container's pids limit,
//! `ulimit -u`, `ulimit -v`) then waits without them, and the waits that rely on them
//! hang: a blocking waiter whose holder dies sleeps until its deadline (forever without
//! one), and an async waiter is never woken at all.
//!
//! The workers make thread creation fail by capping their address space just above what
//! they use (`RLIMIT_AS`), after they opened the namespace; they check that a thread can
//! no longer start before they wait.

use std::time::Duration;

use latchkey::Scope;

use super::{eventually, Dirs, Proc};

/// How long the workers wait before they give up: far more than a grant takes.
pub const WAIT_SECS: u64 = 20;

/// A blocking waiter in a process that cannot start a thread: its holder is SIGKILLed,
/// and it must then be granted the mutex.
#[test]
fn a_waiter_that_cannot_start_its_watcher_thread_never_notices_its_holder_died() {
    let dirs = Dirs::new("latchkey-review-nowatch");
    let mut holder = Proc::spawn(&["hold", &dirs.url(), "m"]);
    let held = holder.line("its hold of m");
    assert!(held.starts_with("held "), "the holder could not take m: {held}");
    let mut waiter = Proc::spawn(&["starved-wait", &dirs.url(), "m"]);
    assert_eq!(waiter.line("that threads can no longer start"), "limited");
    let scope = Scope::open(&dirs.url()).unwrap();
    assert!(eventually(|| scope.inspect("m").unwrap().waiters == 1), "the waiter did not queue");
    holder.kill();
    let said = waiter.line_within("its grant of m", Duration::from_secs(WAIT_SECS + 30));
    assert!(
        said.starts_with("token "),
        "the holder of m was SIGKILLed, yet the waiter was not granted m within {WAIT_SECS} s (it said {said:?}): \
         its watcher thread could not start, the failure was ignored, and it slept as if the holder were watched"
    );
}

/// An async waiter in a process that cannot start a thread: the holder (in the same
/// process) releases, and the waiter must then be granted the mutex.
#[test]
fn an_async_waiter_that_cannot_start_the_multiplexer_thread_is_never_woken() {
    let dirs = Dirs::new("latchkey-review-nomux");
    let mut worker = Proc::spawn(&["starved-async", &dirs.url(), "m"]);
    assert_eq!(worker.line("that threads can no longer start"), "limited");
    let said = worker.line_within("how its async wait ended", Duration::from_secs(WAIT_SECS + 30));
    assert_eq!(
        said, "granted",
        "an async lock() waited for a mutex its own process released, and was not granted within {WAIT_SECS} s: the \
         multiplexer thread that wakes async waits could not start, and the failure was ignored"
    );
}
