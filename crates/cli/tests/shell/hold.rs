//! `latchkey hold --until-pid PID NAME`: the lock for the rest of a script.

use std::process::{Child, Command, Stdio};
use std::time::Instant;

use crate::support::*;

use super::{is_held, kill};

/// A process for `--until-pid` to follow.
fn sleeper() -> Child {
    Command::new("sleep").arg("300").stdin(Stdio::null()).spawn().unwrap()
}

#[test]
fn holds_while_the_process_lives_and_frees_when_it_is_sigkilled() {
    let ns = Namespace::new();
    let mut script = sleeper();
    let pid = script.id().to_string();
    // Run to its end with its stdout and stderr captured: `hold` returns although the
    // holder lives on (it keeps neither open).
    let (code, stdout, stderr) = output(ns.latchkey("hold").args(["--until-pid", &pid, "nightly"]));
    assert_eq!((code, stdout.as_str(), stderr.as_str()), (0, "", ""), "held at once, silently");
    assert!(is_held(&ns, "nightly"));
    assert_eq!(run(&ns, &["-n", "nightly", "--", "true"]).0, 75, "held for the script");
    assert_eq!(output(ns.latchkey("hold").args(["-n", "--until-pid", &pid, "nightly"])).0, 75);
    let killed = Instant::now();
    kill(&mut script);
    assert!(eventually(|| !is_held(&ns, "nightly")), "not freed after the process was SIGKILLed");
    eprintln!("freed {:?} after the process was SIGKILLed", killed.elapsed());
}

#[test]
fn frees_when_the_process_exits_normally_and_when_the_holder_is_killed() {
    let ns = Namespace::new();
    let mut script = sleeper();
    let pid = script.id().to_string();
    assert_eq!(output(ns.latchkey("hold").args(["--until-pid", &pid, "-x", "cfg"])).0, 0);
    assert_eq!(status_json(&ns, &["cfg"])[0]["kind"], "rwlock", "a write hold of the rwlock");
    signal(script.id() as i32, libc::SIGTERM);
    let _ = script.wait();
    assert!(eventually(|| !is_held(&ns, "cfg")), "not freed after the process exited");

    let mut script = sleeper();
    let pid = script.id().to_string();
    assert_eq!(output(ns.latchkey("hold").args(["--until-pid", &pid, "cfg2"])).0, 0);
    let holder = status_json(&ns, &["cfg2"])[0]["holders"][0]["pid"].as_i64().unwrap() as i32;
    signal(holder, libc::SIGKILL);
    assert!(eventually(|| !is_held(&ns, "cfg2")), "not freed after the holder was killed");
    assert!(!is_gone(script.id() as i32), "the script goes on");
    kill(&mut script);
}

#[test]
fn a_process_that_does_not_exist_is_a_usage_error() {
    let ns = Namespace::new();
    let (code, _, stderr) = output(ns.latchkey("hold").args(["--until-pid", "999999999", "nightly"]));
    assert_eq!(code, 64, "{stderr}");
    assert!(stderr.contains("999999999"), "{stderr}");
    assert!(!is_held(&ns, "nightly"));
}

#[test]
fn a_busy_lock_waits_or_gives_up_as_run_does() {
    let ns = Namespace::new();
    let _holder = ns.hold(&["nightly"]);
    let mut script = sleeper();
    let pid = script.id().to_string();
    assert_eq!(output(ns.latchkey("hold").args(["-w", "200ms", "--until-pid", &pid, "nightly"])).0, 75);
    assert_eq!(output(ns.latchkey("hold").args(["-E", "9", "-n", "--until-pid", &pid, "nightly"])).0, 9);
    let entries = status_json(&ns, &["nightly"]);
    assert_eq!(entries[0]["waiters"], 0, "nothing left queued: {entries:?}");
    kill(&mut script);
}

/// Review: the background holder keeps none of the caller's descriptors (a pipe that
/// the caller's caller reads to its end would never end).
#[test]
fn the_holder_keeps_none_of_the_callers_descriptors() {
    let ns = Namespace::new();
    let mut script = sleeper();
    let hold = format!(
        "exec 7>&1; '{}' hold --scope '{}' --until-pid {} nightly",
        env!("CARGO_BIN_EXE_latchkey"),
        ns.url(),
        script.id()
    );
    let mut child = Command::new("sh").args(["-c", &hold]).stdout(Stdio::piped()).spawn().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut all = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stdout, &mut all);
        let _ = tx.send(());
    });
    assert!(rx.recv_timeout(PATIENCE).is_ok(), "the caller's pipe stayed open in the holder");
    assert!(child.wait().unwrap().success());
    assert!(is_held(&ns, "nightly"));
    kill(&mut script);
}

/// Review: a process that exits while its holder still waits for the lock ends the wait.
#[test]
fn a_process_that_exits_while_the_lock_is_awaited_ends_the_wait() {
    let ns = Namespace::new();
    let holder = ns.hold(&["nightly"]);
    let mut script = sleeper();
    let pid = script.id().to_string();
    let mut hold = ns.latchkey("hold").args(["--until-pid", &pid, "nightly"]).stderr(Stdio::piped()).spawn().unwrap();
    assert!(eventually(|| status_json(&ns, &["nightly"])[0]["waiters"] == 1), "the holder queues");
    kill(&mut script);
    let mut status = None;
    assert!(eventually(|| {
        status = hold.try_wait().unwrap();
        status.is_some()
    }));
    assert_eq!(status.unwrap().code(), Some(70), "the process is gone: nothing to hold the lock for");
    assert!(eventually(|| status_json(&ns, &["nightly"])[0]["waiters"] == 0), "nothing left queued");
    drop(holder);
}
