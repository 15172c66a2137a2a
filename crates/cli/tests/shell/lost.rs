//! A hold lost while the command runs: the host namespace deleted under it.

use std::os::unix::process::ExitStatusExt;

use crate::support::*;

use super::{pid_in, start_run};

#[test]
fn a_namespace_deleted_under_a_running_command_stops_it() {
    let ns = Namespace::new();
    let command = ns.file("command");
    let script = format!("echo $$ > '{}'; sleep 300", command.display());
    let latchkey = start_run(&ns, &["job"], &script);
    let command = pid_in(&command);
    std::fs::remove_dir_all(ns.dir()).unwrap();
    let out = latchkey.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(79), "the documented code of a lost hold: {:?} {stderr}", out.status);
    assert!(stderr.contains("lost the hold on \"job\"") && stderr.contains("deleted"), "{stderr}");
    assert!(is_gone(command), "the command was stopped");
}

#[test]
fn a_command_that_ignores_sigterm_is_killed_after_the_grace_period() {
    let ns = Namespace::new();
    let command = ns.file("command");
    let script = format!("trap '' TERM; echo $$ > '{}'; while :; do sleep 1; done", command.display());
    let latchkey = start_run(&ns, &["--kill-after", "300ms", "job"], &script);
    let command = pid_in(&command);
    std::fs::remove_dir_all(ns.dir()).unwrap();
    let out = latchkey.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(79), "{:?} {}", out.status, String::from_utf8_lossy(&out.stderr));
    assert!(is_gone(command));
}

#[test]
fn on_lost_warn_lets_the_command_go_on() {
    let ns = Namespace::new();
    let (command, go) = (ns.file("command"), ns.file("go"));
    let script =
        format!("echo $$ > '{}'; while [ ! -e '{}' ]; do sleep 0.05; done; exit 3", command.display(), go.display());
    let mut latchkey = start_run(&ns, &["--on-lost=warn", "job"], &script);
    let command = pid_in(&command);
    std::fs::remove_dir_all(ns.dir()).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(!is_gone(command), "--on-lost=warn does not stop the command");
    std::fs::write(&go, "").unwrap();
    let status = latchkey.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(latchkey.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert_eq!((status.code(), status.signal()), (Some(3), None), "the command's own code: {stderr}");
    assert!(stderr.contains("warning: lost the hold on \"job\""), "{stderr}");
}
