//! `latchkey run`: exit codes, holding the lock while the command runs, shared holds,
//! semaphore bounds, and SIGKILL.

use std::os::unix::process::ExitStatusExt;

use crate::support::*;

#[test]
fn passes_the_command_exit_code_through() {
    let ns = Namespace::new();
    assert_eq!(run(&ns, &["job", "--", "sh", "-c", "exit 7"]).0, 7);
    assert_eq!(run(&ns, &["job", "--", "true"]).0, 0);
    assert_eq!(run(&ns, &["job", "--", "sh", "-c", "kill -KILL $$"]).0, 128 + 9, "killed by SIGKILL");
    let (code, stdout, _) = output(ns.latchkey("run").args(["job", "--", "echo", "hello", "--not-an-option"]));
    assert_eq!((code, stdout.as_str()), (0, "hello --not-an-option\n"), "stdout is inherited");
}

#[test]
fn a_missing_command_exits_127() {
    let ns = Namespace::new();
    let (code, stderr) = run(&ns, &["job", "--", "/nonexistent/command"]);
    assert_eq!(code, 127, "{stderr}");
    assert!(stderr.contains("/nonexistent/command"), "{stderr}");
}

#[test]
fn holds_the_lock_while_the_command_runs() {
    let ns = Namespace::new();
    let holder = ns.hold(&["job"]);

    let entries = status_json(&ns, &["job"]);
    let holders = entries[0]["holders"].as_array().expect("holders");
    assert_eq!(holders.len(), 1, "{entries:?}");
    assert_eq!(holders[0]["pid"], holder.latchkey_pid(), "the holder is the latchkey run process");

    let (code, stderr) = run(&ns, &["--timeout", "100ms", "job", "--", "true"]);
    assert_eq!(code, 75, "the lock is held: {stderr}");
    assert_eq!(stderr, "", "as flock, silent about a lock not had unless --verbose");
    let (code, stderr) = run(&ns, &["--verbose", "--timeout", "100ms", "job", "--", "true"]);
    assert_eq!(code, 75, "the lock is held: {stderr}");
    assert!(stderr.contains("timed out") && stderr.contains(&format!("pid {}", holder.latchkey_pid())), "{stderr}");

    let status = holder.finish();
    assert_eq!(status.code(), Some(128 + libc::SIGTERM), "the command was ended by SIGTERM: {status:?}");
    assert_eq!(run(&ns, &["--timeout", "2s", "job", "--", "true"]).0, 0, "released when the command ended");
}

#[test]
fn sigkill_of_latchkey_kills_the_command_and_frees_the_lock() {
    let ns = Namespace::new();
    let holder = ns.hold(&["job"]);
    let command = holder.command_pid;
    let status = holder.kill_latchkey();
    assert_eq!(status.signal(), Some(libc::SIGKILL));

    assert!(eventually(|| is_gone(command)), "the command (pid {command}) still runs after latchkey was SIGKILLed");
    let (code, stderr) = run(&ns, &["--timeout", "2s", "job", "--", "true"]);
    assert_eq!(code, 0, "the lock of the killed latchkey was not freed: {stderr}");
}

#[test]
fn shared_holders_run_at_once() {
    let ns = Namespace::new();
    // Each command sleeps 30 s while holding: the second can only start within the
    // patience if the two read holds are shared.
    let first = ns.hold(&["--shared", "config"]);
    let second = ns.hold(&["--shared", "config"]);
    let entries = status_json(&ns, &["config"]);
    assert_eq!(entries[0]["in_use"], 2, "{entries:?}");
    assert_eq!(entries[0]["kind"], "rwlock", "{entries:?}");

    let (code, stderr) = run(&ns, &["--timeout", "100ms", "config", "--", "true"]);
    assert_eq!(code, 65, "a mutex on a reader-writer lock's name is a capacity mismatch: {stderr}");
    assert!(stderr.contains("capacity mismatch"), "{stderr}");

    assert_eq!(first.finish().code(), Some(128 + libc::SIGTERM));
    assert_eq!(second.finish().code(), Some(128 + libc::SIGTERM));
}

#[test]
fn permits_respect_the_capacity() {
    let ns = Namespace::new();
    let gpu = ["--permits", "1", "--capacity", "2", "gpu"];
    let first = ns.hold(&gpu);
    let second = ns.hold(&gpu);
    assert_eq!(status_json(&ns, &["gpu"])[0]["in_use"], 2);

    let (code, stderr) = run(&ns, &[&["--timeout", "200ms"][..], &gpu, &["--", "true"]].concat());
    assert_eq!(code, 75, "a third permit of two: {stderr}");

    // Two permits at once wait for both holders; one freed is enough for one permit.
    let both = ns.start_holding(&["--permits", "2", "--capacity", "2", "gpu"]);
    assert!(eventually(|| status_json(&ns, &["gpu"])[0]["waiters"] == 1), "the request for 2 never queued");
    assert_eq!(first.finish().code(), Some(128 + libc::SIGTERM));
    assert_eq!(run(&ns, &[&["--timeout", "200ms"][..], &gpu, &["--", "true"]].concat()).0, 75, "FIFO: behind the 2");
    assert!(!both.has_started(), "2 permits granted while 1 was still held");
    assert_eq!(second.finish().code(), Some(128 + libc::SIGTERM));
    assert!(eventually(|| both.has_started()), "2 permits not granted once both were free");
}
