//! **Without `futex_waitv`, the multiplexer thread of a namespace never stops.** A
//! scope's multiplexer thread (`wait::mux`) sleeps on its process's doorbell *and* on the
//! namespace's alarm, and `Mux::drop` stops it by ringing the alarm only (the first
//! review's fix for a truncated namespace, whose doorbell may be gone). But
//! `futex::sleep` watches the alarm only where `futex_waitv` works (Linux 5.16 and
//! later, and no seccomp profile that refuses it, as container runtimes' default
//! profiles did before they knew the call): elsewhere the thread sleeps on the doorbell
//! alone, with no time limit, and nothing rings it. It never ends, and it holds the
//! namespace: its descriptor, its 64 GiB mapping, and its process slot, which other
//! processes go on seeing alive. Every scope opened and dropped leaks one.
//!
//! The worker refuses `futex_waitv` with a seccomp filter (`ENOSYS`, as an older kernel).

use super::worker::say;
use super::Proc;

/// The jobs of this module's workers.
pub fn job(job: &str, url: &str, _fields: &[&str]) -> bool {
    match job {
        "no-waitv-open-drop" => no_waitv_open_drop(url),
        _ => return false,
    }
    true
}

/// Threads of this process whose name is `name`: the system call each is in (its
/// number, `-1` if none, or `running`), from `/proc/self/task/TID/syscall`.
fn threads_named(name: &str) -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .map(|task| task.unwrap().path())
        .filter(|task| std::fs::read_to_string(task.join("comm")).unwrap_or_default().trim_end() == name)
        .map(|task| std::fs::read_to_string(task.join("syscall")).unwrap_or_default())
        .map(|syscall| syscall.split(' ').next().unwrap_or_default().trim().to_string())
        .collect()
}

/// Without `futex_waitv`: opens the scope, takes and gives back a mutex, drops it all,
/// and reports `mux threads N` once none is left (or after 10 s).
fn no_waitv_open_drop(url: &str) {
    super::seccomp::refuse(libc::SYS_futex_waitv, libc::ENOSYS);
    let scope = latchkey::Scope::open(url).unwrap();
    drop(scope.lock_blocking("m").unwrap());
    // Dropped once the thread sleeps (in a futex wait), as it does between async waits.
    let start = std::time::Instant::now();
    let futexes = [libc::SYS_futex.to_string(), libc::SYS_futex_waitv.to_string()];
    while !matches!(&threads_named("latchkey-mux")[..], [call] if futexes.contains(call)) {
        assert!(start.elapsed() < std::time::Duration::from_secs(10), "the multiplexer thread never slept");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    drop(scope);
    let start = std::time::Instant::now();
    while !threads_named("latchkey-mux").is_empty() && start.elapsed() < std::time::Duration::from_secs(10) {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    say(format!("mux threads {}", threads_named("latchkey-mux").len()));
}

#[test]
fn without_futex_waitv_a_dropped_scopes_multiplexer_thread_never_stops() {
    let dirs = super::Dirs::new("latchkey-review2-nowaitv");
    let mut worker = Proc::spawn(&["no-waitv-open-drop", &dirs.url()]);
    let said = worker.line("how many multiplexer threads are left");
    assert!(
        said == "mux threads 0",
        "without futex_waitv, the multiplexer thread of a dropped scope (and the namespace it holds: descriptor, \
         mapping, process slot) was still there 10 s later: {said}"
    );
}
