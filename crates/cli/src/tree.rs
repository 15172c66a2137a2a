//! The command's process tree, kept under the lock.
//!
//! flock(1)'s lock lives in a descriptor that every descendant of the command inherits,
//! so it lasts as long as any of them. `run` gets the same coverage without handing its
//! descriptors to the command: a guardian process (`guard.rs`) stands between `run` and
//! the command. It is a child subreaper, so every process the command starts stays its
//! descendant, whatever group or session it moves to; `run` releases the lock only once
//! the guardian reports that none is left. When `run` dies, however it dies, the
//! guardian sees the end of its orders pipe and kills every descendant before it exits;
//! and as it holds `run`'s host namespace descriptor (the liveness lock of `run`'s holds),
//! the lock is freed only after that.
//!
//! The command stays in `run`'s process group, as it would without latchkey: a terminal's
//! Ctrl-C and Ctrl-Z, a pipeline and a shell's job control treat them as one job.

use std::ffi::{CString, OsString};
use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::time::Duration;

use crate::fds;

/// What the guardian reports.
pub enum Report {
    /// The command started.
    Started,
    /// The command ended: its exit code, or the signal that killed it.
    Ended { code: u8, signal: Option<i32> },
    /// The command could not be started: 126 or 127, and why.
    Failed(u8, String),
    /// No process of the command's tree is left.
    Done,
    /// The guardian is gone (only SIGKILL can end it early).
    GuardianLost,
}

/// The guardian and the command's tree under it.
pub struct Tree {
    guardian: libc::pid_t,
    /// Orders to the guardian; closed when `run` ends (or dies).
    orders: OwnedFd,
    reports: BufReader<File>,
}

impl Tree {
    /// Starts the guardian, which starts `argv`. `keep` are descriptors the guardian
    /// must hold (what keeps the holds alive); everything else of this process's own
    /// stays out of the guardian and the command.
    pub fn spawn(argv: &[OsString], keep: &[RawFd]) -> io::Result<Tree> {
        let (orders_read, orders_write) = fds::pipe()?;
        let (reports_read, reports_write) = fds::pipe()?;
        // (Not `current_exe()`: the file may have been replaced since this process started.)
        let exe = CString::new("/proc/self/exe")?;
        let mut args: Vec<CString> = vec![CString::new("latchkey")?, CString::new("guard-tree")?];
        args.push(CString::new(format!("--orders={}", orders_read.as_raw_fd()))?);
        args.push(CString::new(format!("--reports={}", reports_write.as_raw_fd()))?);
        // SAFETY: a plain system call.
        args.push(CString::new(format!("--job={}", unsafe { libc::getpgrp() }))?);
        if !keep.is_empty() {
            let keep: Vec<String> = keep.iter().map(|fd| fd.to_string()).collect();
            args.push(CString::new(format!("--keep={}", keep.join(",")))?);
        }
        args.push(CString::new("--")?);
        for arg in argv {
            args.push(CString::new(arg.as_bytes())?);
        }
        let env: Vec<CString> = std::env::vars_os()
            .filter_map(|(k, v)| CString::new([k.as_bytes(), b"=", v.as_bytes()].concat()).ok())
            .collect();
        let mut pointers: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
        pointers.push(std::ptr::null());
        let mut env_pointers: Vec<*const libc::c_char> = env.iter().map(|e| e.as_ptr()).collect();
        env_pointers.push(std::ptr::null());
        let mut inherit: Vec<RawFd> = keep.to_vec();
        inherit.extend([orders_read.as_raw_fd(), reports_write.as_raw_fd()]);
        // Every signal blocked from before the clone until the guardian blocks them itself
        // (the mask survives execve): none can end it, or run a handler of ours, before.
        // SAFETY: signal sets in locals, installed as this thread's mask.
        let mut old_mask: libc::sigset_t = unsafe { std::mem::zeroed() };
        unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old_mask);
        }
        // SAFETY: the child makes only system calls (fcntl, execve, _exit) on values
        // prepared above, as a child of a multi-threaded process must.
        let guardian = unsafe { raw_fork() };
        let forked = io::Error::last_os_error();
        // SAFETY: restores this thread's mask (in the parent; the child execs or exits).
        if guardian != 0 {
            unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old_mask, std::ptr::null_mut()) };
        }
        if guardian == -1 {
            return Err(forked);
        }
        if guardian == 0 {
            // SAFETY: see above; this process never returns from here.
            unsafe {
                for &fd in &inherit {
                    libc::fcntl(fd, libc::F_SETFD, 0);
                }
                libc::execve(exe.as_ptr(), pointers.as_ptr(), env_pointers.as_ptr());
                libc::_exit(127);
            }
        }
        drop(orders_read);
        drop(reports_write);
        Ok(Tree { guardian, orders: orders_write, reports: BufReader::new(File::from(reports_read)) })
    }

    /// The descriptor whose readability means a report has come.
    pub fn reports_fd(&self) -> RawFd {
        self.reports.get_ref().as_raw_fd()
    }

    /// The next report (blocking: call when `reports_fd` is readable, or buffered).
    pub fn next_report(&mut self) -> Report {
        let mut line = String::new();
        if self.reports.read_line(&mut line).unwrap_or(0) == 0 {
            return Report::GuardianLost;
        }
        let (word, rest) = line.trim_end().split_once(' ').unwrap_or((line.trim_end(), ""));
        match word {
            "done" => Report::Done,
            "exited" => Report::Ended { code: rest.parse().unwrap_or(crate::exit::SOFTWARE), signal: None },
            "signaled" => {
                let signal: i32 = rest.parse().unwrap_or(0);
                Report::Ended { code: (128 + signal) as u8, signal: Some(signal) }
            }
            "failed" => {
                let (code, why) = rest.split_once(' ').unwrap_or((rest, ""));
                Report::Failed(code.parse().unwrap_or(126), why.to_string())
            }
            _ => Report::Started,
        }
    }

    /// Whether a report is buffered already (so that polling the descriptor would miss it).
    pub fn has_buffered_report(&self) -> bool {
        !self.reports.buffer().is_empty()
    }

    /// Sends `signal` to every process of the command's tree.
    pub fn signal(&self, signal: libc::c_int) {
        self.order(&[b's', signal as u8]);
    }

    /// SIGKILLs every process of the command's tree.
    pub fn kill(&self) {
        self.order(b"k");
    }

    fn order(&self, order: &[u8]) {
        // SAFETY: writes from a local buffer to our pipe. (A guardian gone reads nothing.)
        unsafe { libc::write(self.orders.as_raw_fd(), order.as_ptr().cast(), order.len()) };
    }

    /// The tree is done: the guardian exits without a kill, and is reaped.
    pub fn finish(self) {
        self.order(b"q");
        // SAFETY: reaps our child, the guardian.
        unsafe { libc::waitpid(self.guardian, std::ptr::null_mut(), 0) };
    }
}

/// `fork()` without the fork handlers of `pthread_atfork`: the host scope's handler lets a
/// forked child drop the parent's namespace descriptors (so that a child does not keep
/// its parent's holds alive), and the guardian must keep them. Returns as fork does: 0 in
/// the child, its pid in the parent, -1.
///
/// # Safety
/// As for `fork()` in a multi-threaded process, and more: the child has no fork handler
/// run for it (no lock of the C library is reset), so it may only make system calls.
unsafe fn raw_fork() -> libc::pid_t {
    // clone with SIGCHLD and no other flag (and no new stack) is fork.
    libc::syscall(libc::SYS_clone, libc::SIGCHLD as libc::c_ulong, 0usize, 0usize, 0usize, 0usize) as libc::pid_t
}

/// The descriptors of this process that are regular files under `directory`: the host
/// namespace file, whose liveness lock keeps this process's holds alive.
pub fn namespace_fds(directory: &str) -> Vec<RawFd> {
    // As /proc shows the descriptors' paths: without symbolic links or `..`.
    let directory = std::fs::canonicalize(directory).unwrap_or_else(|_| directory.into());
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd").into_iter().flatten().flatten() {
        let Ok(fd) = entry.file_name().to_string_lossy().parse::<RawFd>() else { continue };
        let Ok(target) = std::fs::read_link(entry.path()) else { continue };
        if target.parent().is_some_and(|p| p == directory) && std::fs::metadata(entry.path()).is_ok_and(|m| m.is_file())
        {
            found.push(fd);
        }
    }
    found
}

/// How long `run` sleeps between looks at its hold when nothing happens.
pub const TICK: Duration = Duration::from_millis(100);
