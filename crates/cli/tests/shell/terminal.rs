//! On a terminal (a pseudo-terminal from script(1)), the command's group is the
//! foreground job: Ctrl-C reaches the command, and Ctrl-Z stops it and `run` together.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::support::*;

use super::{is_held, pgid_of, pid_in};

/// The state letter of process `pid` (`S`, `T`, `Z`...).
fn state_of(pid: i32) -> char {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(") ").and_then(|(_, rest)| rest.chars().next()).unwrap_or('?')
}

#[test]
fn on_a_terminal_the_command_is_the_foreground_job() {
    let ns = Namespace::new();
    let (command, foreground) = (ns.file("command"), ns.file("foreground"));
    let inner = format!(
        "'{latchkey}' run --scope '{url}' job -- sh -c 'echo $$ > {command}; ps -o tpgid= -p $$ > {fg}; sleep 300'",
        latchkey = env!("CARGO_BIN_EXE_latchkey"),
        url = ns.url(),
        command = command.display(),
        fg = foreground.display(),
    );
    let mut script = Command::new("script")
        .args(["-qec", &inner, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("script(1), from util-linux's bsdutils, runs the test on a pseudo-terminal");
    let command = pid_in(&command);
    assert!(eventually(|| std::fs::read_to_string(&foreground).is_ok_and(|t| t.ends_with('\n'))));
    let tpgid: i32 = std::fs::read_to_string(&foreground).unwrap().trim().parse().unwrap();
    assert_eq!(tpgid, pgid_of(command), "the command's group is the terminal's foreground group");
    let latchkey = std::fs::read_to_string(format!("/proc/{command}/stat")).unwrap();
    let parent: i32 = latchkey.rsplit_once(") ").unwrap().1.split(' ').nth(1).unwrap().parse().unwrap();

    // Ctrl-Z: the command stops, and `run` stops itself as a job would.
    script.stdin.as_mut().unwrap().write_all(b"\x1a").unwrap();
    assert!(eventually(|| state_of(command) == 'T' && state_of(parent) == 'T'), "Ctrl-Z stopped both");
    assert!(is_held(&ns, "job"), "a stopped job keeps its lock");
    // `fg`: script(1) stopped itself with its child, as a shell's job would; continued,
    // it continues its child, `run`, which continues the command.
    signal(script.id() as i32, libc::SIGCONT);
    assert!(eventually(|| state_of(command) != 'T' && state_of(parent) != 'T'), "SIGCONT continued both");

    // Ctrl-C reaches the command, and `run` ends with it (130), releasing the lock.
    script.stdin.as_mut().unwrap().write_all(b"\x03").unwrap();
    let mut status = None;
    let ended = eventually(|| {
        status = script.try_wait().unwrap();
        status.is_some()
    });
    if !ended {
        let _ = script.kill();
        panic!("script(1) and latchkey run did not end after Ctrl-C");
    }
    let status = status.unwrap();
    assert_eq!(status.code(), Some(128 + libc::SIGINT), "script(1) passes run's code on: {status:?}");
    assert!(is_gone(command) && !is_held(&ns, "job"));
}
