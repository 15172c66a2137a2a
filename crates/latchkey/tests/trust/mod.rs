//! Issue 8, "the host scope, trustworthy": regression tests written against the public
//! API only (a `Scope`, its primitives, guards and `inspect`), so that they hold for any
//! implementation of the host scope.
//!
//! - `deleted`: a namespace directory deleted, or its file replaced, under a holder
//!   (item 2);
//! - `truncated`: the namespace file truncated under a holder (item 3);
//! - `limits`: no hidden limit on holders, readers, waiters, async waits, processes or
//!   names (item 5);
//! - `torture`: workers SIGKILLed a thousand times while they take a mutex, a
//!   reader-writer lock and a semaphore; exclusion, bounds, token order and progress are
//!   checked from the outside;
//! - `worker`: the jobs of the worker processes, which are this test binary run again
//!   with [`worker::ENV`] set.
//!
//! Workers talk to the test through lines on their stdout that start with [`MARK`]
//! (libtest prints its own text before them) and are told to go on through their stdin.
//! Every wait for a worker is bounded ([`PATIENCE`]): a hang becomes a failure that says
//! what did not happen.

mod corrupted;
mod deleted;
mod limits;
mod races;
mod torture;
mod truncated;
mod worker;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use crate::support::{fresh_dir, TempDir};

/// How long a test waits for a state a correct implementation reaches at once (generous:
/// two cores, and many processes).
pub const PATIENCE: Duration = Duration::from_secs(60);

/// The prefix of what a worker reports on its stdout.
pub const MARK: &str = "@@ ";

/// The name of the namespace file in a namespace directory (documented; spelled out here
/// so that the tests need nothing but the public API of `latchkey`).
pub const FILE_NAME: &str = "latchkey.ns";

/// A test's directories under one temporary root, removed when dropped: `ns`, the
/// namespace directory (created by latchkey when first opened), and `files`, for the
/// test's own files.
pub struct Dirs {
    root: TempDir,
}

impl Dirs {
    pub fn new(prefix: &str) -> Dirs {
        let root = TempDir(fresh_dir(prefix));
        std::fs::create_dir_all(root.join("files")).expect("create the test's directory");
        Dirs { root }
    }

    /// The namespace directory.
    pub fn ns(&self) -> PathBuf {
        self.root.join("ns")
    }

    /// `host:` and the namespace directory.
    pub fn url(&self) -> String {
        url(&self.ns())
    }

    /// The namespace file.
    pub fn file(&self) -> PathBuf {
        self.ns().join(FILE_NAME)
    }

    /// A path for the test's own files, outside the namespace directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.root.join("files").join(name)
    }

    /// Another directory under the root (for a second namespace).
    pub fn other(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }
}

pub fn url(dir: &Path) -> String {
    format!("host:{}", dir.display())
}

/// A worker process: its stdin, and the lines it reported. Killed and reaped when dropped,
/// so a test that fails leaves none behind.
pub struct Proc {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    job: String,
}

impl Proc {
    /// Starts a worker on `job` (see `worker.rs`).
    pub fn spawn(job: &[&str]) -> Proc {
        let mut child = Command::new(std::env::current_exe().expect("the test binary"))
            .args(["--exact", "trust::worker::run", "--nocapture", "--test-threads=1"])
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

    /// The next line the worker reports, waiting at most `PATIENCE` for it.
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
                let status = self.wait_within(Duration::from_secs(10));
                panic!("worker {} ended before it reported {what}: {}", self.job, describe(status))
            }
        }
    }

    /// The next line the worker reports within `limit`, if any.
    pub fn line_if_any(&mut self, limit: Duration) -> Option<String> {
        self.lines.recv_timeout(limit).ok()
    }

    /// Every line the worker reports until its stdout ends (at most `PATIENCE`).
    pub fn rest(&mut self) -> Vec<String> {
        let start = Instant::now();
        let mut lines = Vec::new();
        while let Some(left) = PATIENCE.checked_sub(start.elapsed()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => lines.push(line),
                Err(_) => break,
            }
        }
        lines
    }

    /// A line reported by now, if any.
    pub fn try_line(&mut self) -> Option<String> {
        self.lines.try_recv().ok()
    }

    /// Sends `line` to the worker's stdin; false if the worker is gone.
    pub fn tell(&mut self, line: &str) -> bool {
        match self.stdin.as_mut() {
            Some(stdin) => writeln!(stdin, "{line}").and_then(|()| stdin.flush()).is_ok(),
            None => false,
        }
    }

    /// Closes the worker's stdin (its signal to finish).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Waits for the worker to exit, at most `limit`; kills it and panics after that.
    #[track_caller]
    pub fn wait_within(&mut self, limit: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for a worker") {
                return status;
            }
            if start.elapsed() > limit {
                self.kill();
                panic!("worker {} (pid {}) did not exit within {limit:?}", self.job, self.pid());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Whether the worker has exited (and its status).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("poll a worker")
    }

    /// SIGKILLs and reaps the worker.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Closes stdin, waits for a clean exit.
    #[track_caller]
    pub fn finish(mut self) {
        self.close_stdin();
        let status = self.wait_within(PATIENCE);
        assert!(status.success(), "worker {} failed: {}", self.job, describe(status));
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An exit status in words: `exit code 0`, `killed by signal 7 (SIGBUS)`.
pub fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => {
            let name = match signal {
                libc::SIGBUS => " (SIGBUS)",
                libc::SIGSEGV => " (SIGSEGV)",
                libc::SIGKILL => " (SIGKILL)",
                libc::SIGABRT => " (SIGABRT)",
                _ => "",
            };
            format!("killed by signal {signal}{name}")
        }
        _ => format!("{status:?}"),
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
