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

use std::sync::Arc;
use std::time::Duration;

use latchkey::Scope;

use super::worker::{read_line, say};
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

/// Threads of this process whose name is `name`.
fn threads_named(name: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter(|task| {
            let comm = std::fs::read_to_string(task.as_ref().unwrap().path().join("comm")).unwrap_or_default();
            comm.trim_end() == name
        })
        .count()
}

/// The worker job: serves one async wait (the multiplexer thread starts), says `ready`,
/// and, once told (the test has cut the file short), touches the name (a bus error: the
/// namespace is lost), drops everything, and reports `mux threads N` once none is left (or 10 s passed).
pub fn truncated_then_dropped(url: &str, name: &str) {
    let runtime = crate::support::runtime();
    let scope = Arc::new(Scope::open(url).unwrap());
    let mutex = Arc::new(scope.mutex(name).unwrap());
    let guard = mutex.lock_blocking().unwrap();
    runtime.block_on(async {
        let waiting = mutex.clone();
        let task = tokio::spawn(async move { waiting.lock().await.map(drop) });
        while scope.inspect(name).unwrap().waiters == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        drop(guard);
        task.await.unwrap().unwrap();
    });
    assert_eq!(threads_named("latchkey-mux"), 1, "the multiplexer runs");
    say("ready");
    let _ = read_line();
    let touched = mutex.try_lock().map(|g| g.is_some());
    drop(mutex);
    drop(scope);
    let start = std::time::Instant::now();
    while threads_named("latchkey-mux") > 0 && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(10));
    }
    say(format!("mux threads {} (try_lock: {touched:?})", threads_named("latchkey-mux")));
}

/// The multiplexer thread of a namespace lost to truncation outlives the scope: its stop
/// signal is a ring of the process's doorbell, in the process slot, which `Mux::drop`
/// cannot reach once the mapping was replaced by zeroes (`slot()` fails); it sleeps on
/// the old page, and keeps the namespace (descriptor, mapping, registration) with it.
#[test]
fn the_multiplexer_thread_of_a_truncated_namespace_outlives_its_scope() {
    let dirs = Dirs::new("latchkey-review-muxleak");
    let mut worker = Proc::spawn(&["truncated-then-dropped", &dirs.url(), "m"]);
    assert_eq!(worker.line("that its async wait was served"), "ready");
    let file = std::fs::OpenOptions::new().write(true).open(dirs.file()).unwrap();
    file.set_len(4096).unwrap();
    assert!(worker.tell("go"));
    let said = worker.line("how many multiplexer threads are left");
    assert!(
        said.starts_with("mux threads 0 "),
        "every scope of the truncated namespace was dropped, and its multiplexer thread is still there: {said}"
    );
}
