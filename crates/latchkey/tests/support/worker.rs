//! Worker processes of a suite: this test binary run again on one `worker::run` test,
//! which does the job it finds in an environment variable. A worker reports through
//! lines on stdout that start with [`MARK`], and reads lines on stdin; every wait for one
//! is bounded. Killed and reaped when dropped, so a test that fails leaves none behind.

use std::io::{BufRead, BufReader, Write};
use std::marker::PhantomData;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use latchkey::Error;

use crate::trust::{describe, PATIENCE};

/// The prefix of what a worker reports on its stdout.
pub const MARK: &str = "@@ ";

/// A suite whose tests start workers: where its worker entry is, and which variable
/// carries the job.
pub trait Suite {
    /// The worker entry test, e.g. `review::worker::run`.
    const TEST: &'static str;
    /// The environment variable that carries the job, its fields separated by U+001F.
    const ENV: &'static str;
}

/// A worker process of suite `S`.
pub struct Worker<S: Suite> {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    job: String,
    suite: PhantomData<S>,
}

impl<S: Suite> Worker<S> {
    /// The arguments that make the test binary a worker of the suite.
    pub const WORKER_ARGS: [&'static str; 4] = ["--exact", S::TEST, "--nocapture", "--test-threads=1"];

    /// Starts a worker on `job` (see the suite's `worker.rs`).
    pub fn spawn(job: &[&str]) -> Self {
        Self::spawn_command(Self::command(), job)
    }

    /// Starts a worker on `job` as user `uid` and group `gid` (the test runs as root).
    pub fn spawn_as(job: &[&str], uid: u32, gid: u32) -> Self {
        use std::os::unix::process::CommandExt;
        let mut command = Self::command();
        command.uid(uid).gid(gid);
        Self::spawn_command(command, job)
    }

    /// The test binary with [`Self::WORKER_ARGS`].
    fn command() -> Command {
        let mut command = Command::new(std::env::current_exe().expect("the test binary"));
        command.args(Self::WORKER_ARGS);
        command
    }

    /// Starts a worker on `job` with `command`, which runs the test binary with
    /// [`Self::WORKER_ARGS`] (perhaps through another program).
    pub fn spawn_command(mut command: Command, job: &[&str]) -> Self {
        let mut child = command
            .env(S::ENV, job.join("\u{1f}"))
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
        Worker { child, stdin, lines, job: job[0].to_string(), suite: PhantomData }
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

    /// Waits for the worker to exit, at most `PATIENCE`; kills it and panics after that.
    #[track_caller]
    pub fn wait(&mut self) -> ExitStatus {
        self.wait_within(PATIENCE)
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

impl<S: Suite> Drop for Worker<S> {
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

/// Reports `line` to the test.
pub fn say(line: impl AsRef<str>) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}{}", MARK, line.as_ref()).unwrap();
    out.flush().unwrap();
}

/// An error as a worker reports it: `KIND: message`.
pub fn kind(err: &Error) -> String {
    format!("{:?}: {err}", err.kind())
}

/// The next line on stdin; `None` at its end.
pub fn read_line() -> Option<String> {
    let mut line = String::new();
    match std::io::stdin().lock().read_line(&mut line) {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(line.trim_end().to_string()),
    }
}

/// A worker's job: takes the mutex `name`, reports `held T`, and keeps it until stdin
/// ends (or a line comes).
pub fn hold(url: &str, name: &str) {
    let scope = latchkey::Scope::open(url).unwrap();
    let mutex = scope.mutex(name).unwrap();
    let guard = match mutex.lock_blocking_timeout(Duration::from_secs(30)) {
        Ok(guard) => guard,
        Err(err) => return say(format!("error {}", kind(&err))),
    };
    say(format!("held {}", guard.fencing_token()));
    let _ = read_line();
    drop(guard);
}
