//! A second adversarial review of the host scope, after the fixes of the first: each
//! test here shows one bug, and fails on the code it was written against.
//!
//! - `deleted`: a namespace deleted under a process whose watcher has no inotify, and a
//!   release in a lost namespace;
//! - `threads`: the helper threads of a namespace without `futex_waitv`;
//! - `signals`: a SIGBUS that is not a fault of a namespace mapping;
//! - `pids`: a pid reused while a newcomer claims a dead process's slot;
//! - `seccomp`: a system call made to fail in a worker;
//! - `worker`: the jobs of the worker processes (this binary run again).
//!
//! Workers report through lines on stdout that start with [`MARK`], and read lines on
//! stdin; every wait for one is bounded.

mod deleted;
mod pids;
mod seccomp;
mod signals;
mod threads;
mod worker;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::Duration;

pub use crate::trust::{Dirs, PATIENCE};

/// The prefix of what a worker reports on its stdout.
pub const MARK: &str = "@@ ";

/// A worker process of this suite, killed and reaped when dropped.
pub struct Proc {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    job: String,
}

impl Proc {
    /// Starts a worker on `job` (see `worker.rs`).
    pub fn spawn(job: &[&str]) -> Proc {
        let mut command = Command::new(std::env::current_exe().expect("the test binary"));
        command.args(Self::WORKER_ARGS);
        Self::spawn_command(command, job)
    }

    /// The arguments that make the test binary a worker.
    pub const WORKER_ARGS: [&str; 4] = ["--exact", "review2::worker::run", "--nocapture", "--test-threads=1"];

    /// Starts a worker on `job` with `command`, which runs the test binary with
    /// [`Proc::WORKER_ARGS`] (perhaps through another program).
    pub fn spawn_command(mut command: Command, job: &[&str]) -> Proc {
        let mut child = command
            .env(worker::ENV, job.join("\u{1f}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start a worker process");
        let stdout = child.stdout.take().expect("piped stdout");
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some((_, said)) = line.split_once(MARK) {
                    if sender.send(said.to_string()).is_err() {
                        break;
                    }
                }
            }
        });
        let stdin = child.stdin.take();
        Proc { child, stdin, lines, job: job[0].to_string() }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next line the worker reports, waiting at most `PATIENCE`.
    #[track_caller]
    pub fn line(&mut self, what: &str) -> String {
        self.line_within(what, PATIENCE)
    }

    /// The next line the worker reports, waiting at most `limit`.
    #[track_caller]
    pub fn line_within(&mut self, what: &str, limit: Duration) -> String {
        match self.lines.recv_timeout(limit) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => {
                panic!("worker {} (pid {}) did not report {what} within {limit:?}", self.job, self.pid())
            }
            Err(RecvTimeoutError::Disconnected) => {
                let status = self.child.wait().expect("reap a worker");
                panic!("worker {} ended before it reported {what}: {status}", self.job)
            }
        }
    }

    /// The next line, if the worker reports one within `limit`.
    pub fn line_if_any(&mut self, limit: Duration) -> Option<String> {
        self.lines.recv_timeout(limit).ok()
    }

    /// Waits for the worker to end (at most `PATIENCE`; then it is killed).
    pub fn wait(&mut self) -> std::process::ExitStatus {
        let start = std::time::Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for a worker") {
                return status;
            }
            if start.elapsed() > PATIENCE {
                self.kill();
                panic!("worker {} did not end within {PATIENCE:?}", self.job);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Sends `line` to the worker's stdin; false if the worker is gone.
    pub fn tell(&mut self, line: &str) -> bool {
        match self.stdin.as_mut() {
            Some(stdin) => writeln!(stdin, "{line}").and_then(|()| stdin.flush()).is_ok(),
            None => false,
        }
    }

    /// SIGKILLs and reaps the worker.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}
