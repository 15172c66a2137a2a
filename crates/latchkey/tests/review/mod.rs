//! An adversarial review of the host scope: each test here shows one bug, and fails on
//! the code it was written against.
//!
//! - `deleted`: a namespace deleted under a process that goes on granting in it;
//! - `forked`: a scope used in a forked child;
//! - `threads`: waits that hang when the helper threads of a namespace cannot start;
//! - `corrupted`: a corrupted namespace file that makes latchkey panic;
//! - `shared`: a namespace shared by the members of a group;
//! - `races`: interleavings between processes, forced by stopping a process at a system
//!   call with ptrace;
//! - `wakeups`: a nudge half made by a process that died, and the sleeper never woken;
//! - `worker`: the jobs of the worker processes (this binary run again).
//!
//! Workers report through lines on stdout that start with [`MARK`], and read lines on
//! stdin; every wait for one is bounded.

mod corrupted;
mod deleted;
mod forked;
pub(crate) mod races;
mod shared;
mod threads;
mod wakeups;
mod worker;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

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
        Proc::start(job, |_| {})
    }

    /// Starts a worker on `job` as user `uid` and group `gid` (the test runs as root).
    pub fn spawn_as(job: &[&str], uid: u32, gid: u32) -> Proc {
        use std::os::unix::process::CommandExt;
        Proc::start(job, |command| {
            command.uid(uid).gid(gid);
        })
    }

    fn start(job: &[&str], adjust: impl FnOnce(&mut Command)) -> Proc {
        let mut command = Command::new(std::env::current_exe().expect("the test binary"));
        adjust(&mut command);
        let mut child = command
            .args(["--exact", "review::worker::run", "--nocapture", "--test-threads=1"])
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
    pub fn line_within_if_any(&mut self, limit: Duration) -> Option<String> {
        self.lines.recv_timeout(limit).ok()
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

/// Polls `condition` until it holds or `PATIENCE` passed; returns whether it holds.
pub fn eventually(mut condition: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if condition() {
            return true;
        }
        if start.elapsed() > PATIENCE {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}
