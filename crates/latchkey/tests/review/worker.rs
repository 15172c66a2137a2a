//! The jobs of the worker processes of the `review` suite. A worker reports through lines
//! that start with `@@ ` (see `support::worker::MARK`) and waits for the test on its stdin.

use std::time::Duration;

use latchkey::Scope;

pub use crate::support::worker::{hold, kind, read_line, say};

/// Set to the job, its fields separated by U+001F, in a worker process.
pub const ENV: &str = "LATCHKEY_REVIEW_WORKER";

/// The entry point of a worker process; in the test run itself, does nothing.
#[test]
fn run() {
    let Ok(job) = std::env::var(ENV) else { return };
    let fields: Vec<&str> = job.split('\u{1f}').collect();
    let url = fields[1];
    match fields[0] {
        "hold" => hold(url, fields[2]),
        "take" => take(url, fields[2]),
        "truncated-then-dropped" => super::threads::truncated_then_dropped(url, fields[2]),
        "fork-at-fd-limit" => super::forked::fork_at_the_descriptor_limit(url, fields[2]),
        "starved-wait" => starved_wait(url, fields[2]),
        "starved-async" => starved_async(url, fields[2]),
        other => super::races::job(other, url, &fields[2..]),
    }
    std::process::exit(0);
}

/// Opens the scope and takes the mutex by name: reports `token T`, or `error KIND`.
fn take(url: &str, name: &str) {
    let taken = Scope::open(url).and_then(|scope| scope.lock_blocking_timeout(name, Duration::from_secs(30)));
    match taken {
        Ok(guard) => say(format!("token {}", guard.fencing_token())),
        Err(err) => say(format!("error {}", kind(&err))),
    }
}

/// Caps the address space just above what the process uses, so that no thread can
/// start (a thread's stack is 2 MiB); reports `limited` once a thread fails to start.
fn starve_threads() {
    // One malloc arena: a thread that found its arena busy would otherwise reserve a new
    // one (64 MiB) and, under the cap, fail to allocate at all.
    // SAFETY: sets a malloc parameter; no memory is passed.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmSize:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmSize in /proc/self/status");
    let limit = (kib + 1024) * 1024;
    let rlimit = libc::rlimit { rlim_cur: limit, rlim_max: limit };
    // SAFETY: a plain system call on a valid struct.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &rlimit) }, 0);
    match std::thread::Builder::new().spawn(|| {}) {
        Err(_) => say("limited"),
        Ok(thread) => {
            let _ = thread.join();
            say("threads still start");
        }
    }
}

/// Opens the mutex, makes thread creation fail, then waits for it (blocking, with a
/// deadline): reports `token T` or `error KIND`.
fn starved_wait(url: &str, name: &str) {
    let scope = Scope::open(url).unwrap();
    let mutex = scope.mutex(name).unwrap();
    starve_threads();
    match mutex.lock_blocking_timeout(Duration::from_secs(super::threads::WAIT_SECS)) {
        Ok(guard) => say(format!("token {}", guard.fencing_token())),
        Err(err) => say(format!("error {}", kind(&err))),
    };
}

/// Holds the mutex, makes thread creation fail, starts a task that waits for the mutex
/// with an async lock(), releases the mutex once the task waits, and waits for the task:
/// reports `granted` or `timed out`. (The task is polled again only when woken.)
fn starved_async(url: &str, name: &str) {
    let runtime = crate::support::runtime();
    let scope: &'static Scope = Box::leak(Box::new(Scope::open(url).unwrap()));
    let mutex: &'static latchkey::Mutex = Box::leak(Box::new(scope.mutex(name).unwrap()));
    let guard = mutex.lock_blocking().unwrap();
    starve_threads();
    runtime.block_on(async {
        let task = tokio::spawn(async move { mutex.lock().await.map(drop) });
        while scope.inspect(name).unwrap().waiters == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        drop(guard);
        match tokio::time::timeout(Duration::from_secs(super::threads::WAIT_SECS), task).await {
            Ok(Ok(Ok(()))) => say("granted"),
            Ok(Ok(Err(err))) => say(format!("error {}", kind(&err))),
            Ok(Err(err)) => say(format!("the task failed: {err}")),
            Err(_) => say("timed out"),
        }
    });
}
