//! The guardian of `latchkey run`'s command: a hidden subcommand, `guard-tree`, that
//! `run` starts between itself and the command (see `tree.rs` for why).
//!
//! It is a child subreaper, so every process the command starts stays its descendant,
//! whatever group or session it moves to: a process whose parent ends is adopted by it.
//! It starts the command, reports on a pipe (`started PID`, `exited CODE` or
//! `signaled N` for the command, `done` once no descendant is left), and takes orders
//! on another: `s` + a signal number (send it to every descendant), `k` (SIGKILL every
//! descendant until none is left), `q` (exit). At the end of the orders (`run` died,
//! however it died) it kills every descendant and only then exits: it holds `run`'s
//! host namespace descriptor, so `run`'s holds stay alive until then.

use std::collections::{HashMap, VecDeque};
use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::FromRawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::Command;
use std::sync::{Arc, Mutex};

use clap::Args;

use crate::{exit, fds};

/// The arguments of `latchkey guard-tree`.
#[derive(Args)]
pub struct GuardArgs {
    /// The descriptor to read orders from.
    #[arg(long)]
    orders: i32,
    /// The descriptor to write reports to.
    #[arg(long)]
    reports: i32,
    /// The process group of `run`'s job, which the command joins.
    #[arg(long)]
    job: i32,
    /// Descriptors to keep open, and out of the command (`run`'s namespace files).
    #[arg(long, value_delimiter = ',')]
    keep: Vec<i32>,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    argv: Vec<OsString>,
}

/// Runs the command and guards its process tree; never returns.
pub fn guard(args: GuardArgs) -> ! {
    // No signal may end the guardian (but SIGKILL, which cannot be blocked): blocked in
    // this thread, and so in the reaper thread it starts. The command gets an empty mask.
    // SAFETY: a signal set in a local, filled and installed as this thread's mask; prctl
    // takes a flag.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, std::ptr::null_mut());
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong);
        // A group of its own: a SIGKILL to the whole job (`kill -9 %1`) ends `run` and
        // the command's processes still in the job, not the guardian, which then ends the
        // rest (those that left the job's group).
        libc::setpgid(0, 0);
    }
    // Kept here, and out of the command: close-on-exec again.
    for &fd in args.keep.iter().chain([&args.orders, &args.reports]) {
        // SAFETY: sets a flag of a descriptor `run` handed to this process.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    // SAFETY: `run` handed these descriptors to this process, which alone uses them.
    let (mut orders, reports) = unsafe { (File::from_raw_fd(args.orders), File::from_raw_fd(args.reports)) };
    let reports = Arc::new(Mutex::new(reports));
    let report = move |line: String| {
        let mut reports = reports.lock().unwrap_or_else(|e| e.into_inner());
        let _ = reports.write_all(format!("{line}\n").as_bytes());
    };
    // `run` may have died already: then nothing is started.
    if fds::ready(&orders, std::time::Duration::ZERO) {
        let mut order = [0u8; 1];
        if !matches!(orders.read(&mut order), Ok(1)) {
            std::process::exit(0);
        }
    }
    let mut command = Command::new(&args.argv[0]);
    command.args(&args.argv[1..]);
    let job = args.job;
    // SAFETY: the closure runs in the child between fork and exec, and makes two system
    // calls: it joins `run`'s job (so that the terminal and the shell see one job) and
    // empties the signal mask.
    unsafe {
        command.pre_exec(move || {
            libc::setpgid(0, job);
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
            Ok(())
        });
    }
    match command.spawn() {
        Ok(child) => {
            let pid = child.id() as libc::pid_t;
            report(format!("started {pid}"));
            let reaper_report = report.clone();
            std::thread::spawn(move || reap(pid, reaper_report));
        }
        Err(err) => {
            let code = if err.kind() == io::ErrorKind::NotFound { exit::NOT_FOUND } else { exit::CANNOT_EXECUTE };
            report(format!("failed {code} cannot run {:?}: {err}", args.argv[0]));
            report("done".to_string());
            NONE_LEFT.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }
    let mut order = [0u8; 2];
    loop {
        match orders.read(&mut order[..1]) {
            Ok(1) if order[0] == b's' => {
                if orders.read_exact(&mut order[1..]).is_ok() {
                    signal_all(i32::from(order[1]));
                }
            }
            Ok(1) if order[0] == b'k' => kill_all(),
            Ok(1) if order[0] == b'q' => std::process::exit(0),
            Ok(1) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // `run` is gone: nothing may run on outside its lock.
            _ => {
                kill_all();
                std::process::exit(0);
            }
        }
    }
}

/// Reaps every descendant (each becomes a child once its parent ends), reports the
/// command's end, and `done` when none is left.
fn reap(command: libc::pid_t, report: impl Fn(String)) {
    reap_all(command, report);
    NONE_LEFT.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// Set once no descendant is left: the guardian has no child (and, as a subreaper, so no
/// descendant), so `kill_all` may stop.
static NONE_LEFT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn reap_all(command: libc::pid_t, report: impl Fn(String)) {
    loop {
        // SAFETY: a zeroed siginfo_t is valid; waitid fills it in.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waits for any child, into a local.
        if unsafe { libc::waitid(libc::P_ALL, 0, &mut info, libc::WEXITED) } == -1 {
            if io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            report("done".to_string());
            return;
        }
        // SAFETY: waitid filled in the child fields.
        let (pid, code, status) = unsafe { (info.si_pid(), info.si_code, info.si_status()) };
        if pid == command {
            let status = match code {
                libc::CLD_EXITED => std::process::ExitStatus::from_raw(status << 8),
                _ => std::process::ExitStatus::from_raw(status),
            };
            report(match (status.code(), status.signal()) {
                (Some(code), _) => format!("exited {code}"),
                (None, Some(signal)) => format!("signaled {signal}"),
                (None, None) => "exited 70".to_string(),
            });
        }
    }
}

/// The processes below this one, from /proc (parents before their children).
fn descendants() -> Vec<libc::pid_t> {
    let mut children: HashMap<libc::pid_t, Vec<libc::pid_t>> = HashMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<libc::pid_t>() else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // The parent is the second field after the command name, which is in parentheses.
        let parent = stat.rsplit_once(") ").and_then(|(_, rest)| rest.split(' ').nth(1)?.parse().ok());
        if let Some(parent) = parent {
            children.entry(parent).or_default().push(pid);
        }
    }
    let mut found = Vec::new();
    let mut queue = VecDeque::from([std::process::id() as libc::pid_t]);
    while let Some(pid) = queue.pop_front() {
        for &child in children.get(&pid).into_iter().flatten() {
            found.push(child);
            queue.push_back(child);
        }
    }
    found
}

/// Sends `signal` to every descendant.
fn signal_all(signal: libc::c_int) {
    for pid in descendants() {
        // SAFETY: kill takes a pid and a signal number.
        unsafe { libc::kill(pid, signal) };
    }
}

/// SIGKILLs every descendant until none is left (the reaper saw no child): one that
/// forked meanwhile has its children adopted by this process as their parent dies, and
/// killed in the next round.
fn kill_all() {
    let mut pause = std::time::Duration::from_millis(1);
    while !NONE_LEFT.load(std::sync::atomic::Ordering::SeqCst) {
        for pid in descendants() {
            // SAFETY: kill takes a pid and a signal number.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(std::time::Duration::from_millis(50));
    }
}
