//! On a terminal (a pseudo-terminal from script(1)), `run` and its command are one
//! foreground job, as they would be without latchkey (so Ctrl-Z, `fg` and pipelines
//! treat them as one, the kernel's and the shell's business): Ctrl-C ends the command,
//! and `run` ends as it did, killed by SIGINT, once it has released the lock.

use std::io::Write;
use std::process::{Child, Command, ExitStatus, Stdio};

use crate::support::*;

use super::{is_held, parent_of, pgid_of, pid_in};

/// `latchkey run --scope NS job -- sh -c SCRIPT`, on a pseudo-terminal of script(1) whose
/// stdin (the terminal's keyboard) is piped.
fn run_on_a_terminal(ns: &Namespace, script: &str) -> Child {
    let inner = format!("'{}' run --scope '{}' job -- sh -c '{script}'", env!("CARGO_BIN_EXE_latchkey"), ns.url());
    Command::new("script")
        .args(["-qec", &inner, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("script(1), from util-linux's bsdutils, runs the test on a pseudo-terminal")
}

/// Types Ctrl-C on the terminal and waits for script(1) to end; `None` (and killed) if it
/// does not within `PATIENCE`.
fn ctrl_c(script: &mut Child) -> Option<ExitStatus> {
    script.stdin.as_mut().unwrap().write_all(b"\x03").unwrap();
    let mut status = None;
    let ended = eventually(|| {
        status = script.try_wait().unwrap();
        status.is_some()
    });
    if !ended {
        let _ = script.kill();
    }
    status
}

#[test]
fn on_a_terminal_the_command_is_the_foreground_job() {
    let ns = Namespace::new();
    let (command, foreground) = (ns.file("command"), ns.file("foreground"));
    let mut script = run_on_a_terminal(
        &ns,
        &format!("echo $$ > {}; cut -d\\  -f8 /proc/$$/stat > {}; sleep 300", command.display(), foreground.display()),
    );
    let command = pid_in(&command);
    assert!(eventually(|| std::fs::read_to_string(&foreground).is_ok_and(|t| t.ends_with('\n'))));
    let tpgid: i32 = std::fs::read_to_string(&foreground).unwrap().trim().parse().unwrap();
    let latchkey = parent_of(parent_of(command));
    assert_eq!(tpgid, pgid_of(command), "the command is in the terminal's foreground group");
    assert_eq!(pgid_of(latchkey), pgid_of(command), "with latchkey run: one job");

    // Ctrl-C ends the command, and `run` ends as it did, killed by SIGINT, once it has
    // released the lock (so that a shell loop around it stops too).
    let status = ctrl_c(&mut script).expect("script(1) and latchkey run did not end after Ctrl-C");
    assert_eq!(status.code(), Some(128 + libc::SIGINT), "script(1) passes run's end on: {status:?}");
    assert!(is_gone(command) && !is_held(&ns, "job"));
}

/// Review 2: once the command has ended, Ctrl-C ends what it left running (a shell's
/// background job ignores SIGINT), instead of leaving `run` waiting for it.
#[test]
fn ctrl_c_after_the_command_ended_ends_what_it_left_running() {
    let ns = Namespace::new();
    let background = ns.file("background");
    let mut script = run_on_a_terminal(&ns, &format!("sleep 300 & echo $! > {}; exit 0", background.display()));
    let background = pid_in(&background);
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(!is_gone(background) && is_held(&ns, "job"), "run waits for the background process");
    assert!(ctrl_c(&mut script).is_some(), "Ctrl-C did not end the background process the command left, nor run");
    assert!(is_gone(background) && !is_held(&ns, "job"));
}
