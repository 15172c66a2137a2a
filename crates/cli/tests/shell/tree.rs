//! The lock covers the command's whole process tree.

use std::time::Instant;

use crate::support::*;

use super::{is_held, kill, parent_of, pid_in, start_run};

#[test]
fn a_background_grandchild_dies_with_a_sigkilled_run_before_the_lock_is_free() {
    let ns = Namespace::new();
    let grandchild = ns.file("grandchild");
    let script = format!("sleep 300 & echo $! > '{}'; sleep 300", grandchild.display());
    let mut latchkey = start_run(&ns, &["job"], &script);
    let grandchild = pid_in(&grandchild);
    assert!(is_held(&ns, "job"));
    let killed = Instant::now();
    kill(&mut latchkey);
    assert!(eventually(|| is_gone(grandchild)), "the background grandchild outlived latchkey run");
    eprintln!("the grandchild was gone {:?} after latchkey run was SIGKILLed", killed.elapsed());
    assert!(eventually(|| !is_held(&ns, "job")), "the lock was not freed");
    assert_eq!(run(&ns, &["-n", "job", "--", "true"]).0, 0);
}

/// The guardian, which kills the group when `run` dies, keeps `run`'s hold alive until
/// it has: stopped (by ptrace) before it can act, the lock stays held, and the
/// grandchild runs on; let go, it kills the group, and only then is the lock free.
#[test]
fn the_lock_is_freed_only_after_the_group_was_killed() {
    let ns = Namespace::new();
    let grandchild = ns.file("grandchild");
    let script = format!("sleep 300 & echo $! > '{}'; sleep 300", grandchild.display());
    let mut latchkey = start_run(&ns, &["job"], &script);
    let grandchild = pid_in(&grandchild);
    let guardian = parent_of(parent_of(grandchild));
    assert_eq!(parent_of(guardian) as u32, latchkey.id(), "the guardian stands between run and the command");
    // SAFETY: ptrace requests on a process of ours (the test runs as its user or root).
    unsafe {
        assert_eq!(libc::ptrace(libc::PTRACE_SEIZE, guardian, 0usize, 0usize), 0, "seize the guardian");
        assert_eq!(libc::ptrace(libc::PTRACE_INTERRUPT, guardian, 0usize, 0usize), 0);
        let mut status = 0;
        assert_eq!(libc::waitpid(guardian, &mut status, libc::__WALL), guardian);
    }
    kill(&mut latchkey);
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(is_held(&ns, "job"), "latchkey run is dead, its guardian stopped: the lock must still be held");
    assert_eq!(run(&ns, &["-n", "job", "--", "true"]).0, 75);
    assert!(!is_gone(grandchild), "the grandchild runs on while the lock is held");
    // SAFETY: lets the traced guardian go on.
    unsafe { libc::ptrace(libc::PTRACE_DETACH, guardian, 0usize, 0usize) };
    assert!(eventually(|| is_gone(grandchild)), "the guardian did not kill the group");
    assert!(eventually(|| !is_held(&ns, "job")), "the lock was not freed after the group was killed");
}

#[test]
fn run_waits_for_the_commands_background_processes_before_it_releases() {
    let ns = Namespace::new();
    let (background, done) = (ns.file("background"), ns.file("done"));
    let script =
        format!("(sleep 1; echo finished > '{}') & echo $! > '{}'; exit 0", done.display(), background.display());
    let mut latchkey = start_run(&ns, &["job"], &script);
    let background = pid_in(&background);
    // The command itself has exited; its background process still runs, under the lock.
    assert!(!is_gone(background) && is_held(&ns, "job"));
    let status = latchkey.wait().unwrap();
    assert_eq!(status.code(), Some(0), "the command's own exit code");
    assert_eq!(std::fs::read_to_string(&done).unwrap(), "finished\n", "run ended before its background process");
    assert!(!is_held(&ns, "job"));
}

/// Each signal reaches the command (its trap runs) and, but for SIGINT, which a shell's
/// background jobs ignore, its background process too; `run` ends when they have, with
/// the command's exit code, and releases the lock.
#[test]
fn sigint_sigterm_and_sighup_reach_the_whole_group() {
    for (number, name) in [(libc::SIGINT, "INT"), (libc::SIGTERM, "TERM"), (libc::SIGHUP, "HUP")] {
        let ns = Namespace::new();
        let (got, background) = (ns.file("got"), ns.file("background"));
        let stop_background = if name == "INT" { "kill $!;" } else { "" };
        let script = format!(
            "trap 'echo {name} > \"{got}\"; {stop_background} exit 6' {name}; sleep 300 & echo $! > '{bg}'; wait",
            got = got.display(),
            bg = background.display()
        );
        let mut latchkey = start_run(&ns, &["job"], &script);
        let background = pid_in(&background);
        signal(latchkey.id() as i32, number);
        assert!(eventually(|| is_gone(background)), "SIG{name}: the background process still runs");
        let status = latchkey.wait().unwrap();
        assert_eq!(
            std::fs::read_to_string(&got).unwrap_or_default(),
            format!("{name}\n"),
            "SIG{name} reached the command"
        );
        assert_eq!(status.code(), Some(6), "SIG{name}: latchkey run exits with the command's code: {status:?}");
        assert!(!is_held(&ns, "job"), "released after SIG{name}");
    }
}

/// The command gets the descriptors it would get without latchkey, and no more.
#[test]
fn no_descriptor_of_latchkey_leaks_into_the_command() {
    let ns = Namespace::new();
    let fds = |stdout: &str| -> Vec<String> {
        // Each descriptor, and what it is but for the directory that ls reads (its own).
        let mut fds: Vec<String> = stdout
            .lines()
            .filter_map(|l| l.split_once(" -> "))
            .map(|(fd, _)| fd.rsplit(' ').next().unwrap().to_string())
            .collect();
        fds.sort();
        fds
    };
    let (_, without, _) = output(std::process::Command::new("ls").args(["-l", "/proc/self/fd"]));
    let (code, with, stderr) = output(ns.latchkey("run").args(["job", "--", "ls", "-l", "/proc/self/fd"]));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(fds(&with), fds(&without), "under latchkey:\n{with}\nwithout:\n{without}");
}

/// Review: a process that leaves the command's process group or session (setsid;
/// timeout(1) does setpgid) is still waited for, and still killed with a SIGKILLed `run`
/// before the lock is free.
#[test]
fn a_process_that_leaves_the_group_or_the_session_stays_under_the_lock() {
    let ns = Namespace::new();
    let (escaped, done) = (ns.file("escaped"), ns.file("done"));
    // Waited for: `run` ends only after it.
    let script = format!("setsid sh -c 'sleep 1; echo finished > \"{}\"' & exit 0", done.display());
    assert_eq!(run(&ns, &["job", "--", "sh", "-c", &script]).0, 0);
    assert_eq!(std::fs::read_to_string(&done).unwrap(), "finished\n", "run ended before the escaped process");
    let (code, stderr) = run(&ns, &["job", "--", "timeout", "5", "sh", "-c", "sleep 0.5; exit 3"]);
    assert_eq!(code, 3, "timeout(1) runs in a group of its own, and is waited for: {stderr}");
    // Killed: `run` is SIGKILLed while the escaped process runs.
    let script = format!("setsid sh -c 'echo $$ > \"{}\"; sleep 300' & sleep 300", escaped.display());
    let mut latchkey = start_run(&ns, &["job"], &script);
    let escaped = pid_in(&escaped);
    kill(&mut latchkey);
    assert!(eventually(|| is_gone(escaped)), "a process in a session of its own outlived latchkey run");
    assert!(eventually(|| !is_held(&ns, "job")));
}

/// Review: the guardian is not ended by signals the command sends around.
#[test]
fn the_guardian_ignores_the_signals_a_command_sends() {
    let ns = Namespace::new();
    let grandchild = ns.file("grandchild");
    let script = format!(
        "for s in USR1 USR2 ALRM TERM INT HUP PIPE; do kill -$s $PPID; done; sleep 300 & echo $! > '{}'; wait",
        grandchild.display()
    );
    let mut latchkey = start_run(&ns, &["job"], &script);
    let grandchild = pid_in(&grandchild);
    std::thread::sleep(std::time::Duration::from_millis(200));
    kill(&mut latchkey);
    assert!(eventually(|| is_gone(grandchild)), "the guardian was gone, and the grandchild outlived latchkey run");
}

/// Review: a command killed by SIGINT ends `run` by SIGINT too (after the release), so
/// that a shell loop around `run` stops at Ctrl-C as it does around the command.
#[test]
fn run_ends_by_the_sigint_that_ended_the_command() {
    use std::os::unix::process::ExitStatusExt;
    let ns = Namespace::new();
    let status = ns.latchkey("run").args(["job", "--", "sh", "-c", "kill -INT $$"]).status().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGINT), "{status:?}");
    assert!(!is_held(&ns, "job"));
}

/// Review 2: through a scope path with a symbolic link in it, the guardian still keeps
/// the hold alive (it found the namespace descriptor by the path /proc shows).
#[test]
fn the_guardian_keeps_the_hold_through_a_symlinked_scope_path() {
    let ns = Namespace::new();
    std::fs::create_dir_all(ns.dir()).unwrap();
    let link = ns.file("link");
    std::os::unix::fs::symlink(ns.dir().parent().unwrap(), &link).unwrap();
    let url = format!("host:{}/{}", link.display(), ns.dir().file_name().unwrap().to_string_lossy());
    let grandchild = ns.file("grandchild");
    let script = format!("sleep 300 & echo $! > '{}'; sleep 300", grandchild.display());
    let mut latchkey = latchkey()
        .args(["run", "--scope", &url, "job", "--", "sh", "-c", &script])
        .stdin(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let grandchild = pid_in(&grandchild);
    let guardian = parent_of(parent_of(grandchild));
    stop_by_ptrace(guardian);
    kill(&mut latchkey);
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(is_held(&ns, "job"), "run is dead, its guardian stopped: the lock must still be held");
    // SAFETY: lets the traced guardian go on.
    unsafe { libc::ptrace(libc::PTRACE_DETACH, guardian, 0usize, 0usize) };
    assert!(eventually(|| is_gone(grandchild)) && eventually(|| !is_held(&ns, "job")));
}

/// Stops `pid` with ptrace (a stop that SIGCONT does not end).
fn stop_by_ptrace(pid: i32) {
    // SAFETY: ptrace requests on a process of ours.
    unsafe {
        assert_eq!(libc::ptrace(libc::PTRACE_SEIZE, pid, 0usize, 0usize), 0, "seize {pid}");
        assert_eq!(libc::ptrace(libc::PTRACE_INTERRUPT, pid, 0usize, 0usize), 0);
        let mut status = 0;
        assert_eq!(libc::waitpid(pid, &mut status, libc::__WALL), pid);
    }
}

/// Review 2: a SIGKILL to the whole job (`kill -9 %1`) ends `run` and the command, not
/// the guardian, which then kills what left the job's group.
#[test]
fn a_sigkill_to_the_whole_job_leaves_nothing_running() {
    use std::os::unix::process::CommandExt;
    let ns = Namespace::new();
    let escaped = ns.file("escaped");
    let script = format!("setsid sh -c 'echo $$ > \"{}\"; sleep 300' & sleep 300", escaped.display());
    let mut command = ns.latchkey("run");
    command.args(["job", "--", "sh", "-c", &script]).stdin(std::process::Stdio::null());
    // SAFETY: the child makes one system call before exec: a process group of its own,
    // as a shell gives a job.
    unsafe {
        command.pre_exec(|| if libc::setpgid(0, 0) == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) })
    };
    let mut latchkey = command.spawn().unwrap();
    let escaped = pid_in(&escaped);
    signal(-(latchkey.id() as i32), libc::SIGKILL);
    let _ = latchkey.wait();
    assert!(eventually(|| is_gone(escaped)), "a process that left the job outlived a SIGKILL to the job");
    assert!(eventually(|| !is_held(&ns, "job")));
}

/// Review 2: a signal the caller ignores (nohup) stays ignored in the command.
#[test]
fn signals_the_caller_ignores_stay_ignored_in_the_command() {
    use std::os::unix::process::CommandExt;
    let ns = Namespace::new();
    let mut command = ns.latchkey("run");
    command.args(["job", "--", "grep", "SigIgn", "/proc/self/status"]);
    // SAFETY: sets a signal disposition in the child before exec.
    unsafe {
        command.pre_exec(|| {
            libc::signal(libc::SIGHUP, libc::SIG_IGN);
            Ok(())
        })
    };
    let (code, stdout, stderr) = output(&mut command);
    assert_eq!(code, 0, "{stderr}");
    let mask = u64::from_str_radix(stdout.split_whitespace().nth(1).unwrap(), 16).unwrap();
    assert_ne!(mask & (1 << (libc::SIGHUP - 1)), 0, "SIGHUP is ignored in the command, as under nohup: {stdout}");
}
