//! What fault tests share: worker processes (the test binary run again on its test
//! `worker::run`, with the job in [`JOB`]), bounded waits, and seeded randomness.

use std::io::{BufRead, BufReader, Write as _};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// How long any wait of a test may take before it fails: generous, for loaded machines.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// The environment variable that makes the test binary a worker; its value is the job,
/// fields separated by U+001F. The test binary's `worker::run` test reads it, and does
/// nothing when it is unset.
pub const JOB: &str = "LATCHKEY_TEST_JOB";

/// The prefix of the lines a worker reports on its stdout (the rest is the harness's).
const MARK: &str = "@@ ";

/// Reports `line` to the test (in a worker).
pub fn say(line: impl AsRef<str>) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{MARK}{}", line.as_ref()).expect("write to the test");
    out.flush().expect("flush to the test");
}

/// A worker process: killed and reaped when dropped.
pub struct Worker {
    child: Child,
    lines: Receiver<String>,
    job: String,
}

impl Worker {
    /// Starts the test binary as a worker on `job`; it dies with the thread that started
    /// it (`PR_SET_PDEATHSIG`), so a test that fails leaves none behind.
    pub fn spawn(job: &[&str]) -> Worker {
        Worker::spawn_with(job, &[])
    }

    /// [`spawn`](Worker::spawn) with environment variables `env` set for the worker (a
    /// preloaded library, a fake clock).
    pub fn spawn_with(job: &[&str], env: &[(&str, &str)]) -> Worker {
        let mut command = Command::new(std::env::current_exe().expect("the test binary"));
        command.envs(env.iter().copied());
        command
            .args(["--exact", "worker::run", "--nocapture", "--test-threads=1"])
            .env(JOB, job.join("\u{1f}"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        // SAFETY: runs in the child between fork and exec, where only async-signal-safe
        // calls are allowed: prctl is a system call that neither allocates nor locks.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = command.spawn().expect("start a worker process");
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
        Worker { child, lines, job: job[0].to_string() }
    }

    /// The worker's process id.
    pub fn pid(&self) -> libc::pid_t {
        self.child.id() as libc::pid_t
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
                panic!("worker {} ended before it reported {what}: {:?}", self.job, self.child.wait())
            }
        }
    }

    /// The next line the worker reports, at most [`PATIENCE`] away.
    #[track_caller]
    pub fn line(&mut self, what: &str) -> String {
        self.line_within(what, PATIENCE)
    }

    /// The lines reported by now.
    pub fn lines_so_far(&mut self) -> Vec<String> {
        self.lines.try_iter().collect()
    }

    /// Every line the worker reported until its stdout ended (it exited, or was killed),
    /// waiting at most [`PATIENCE`].
    pub fn rest(&mut self) -> Vec<String> {
        let began = Instant::now();
        let mut lines = Vec::new();
        while let Some(left) = PATIENCE.checked_sub(began.elapsed()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => lines.push(line),
                Err(_) => break,
            }
        }
        lines
    }

    /// Sends `signal` to the worker.
    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill has no memory-safety preconditions; the pid is our unreaped child's.
        let sent = unsafe { libc::kill(self.pid(), signal) };
        assert_eq!(sent, 0, "signal {signal} to worker {}: {}", self.job, std::io::Error::last_os_error());
    }

    /// Stops the worker (SIGSTOP) and waits until the kernel says it is stopped.
    pub fn stop(&self) {
        self.signal(libc::SIGSTOP);
        let stat = format!("/proc/{}/stat", self.pid());
        let began = Instant::now();
        // The state is the field after the parenthesised command name.
        while !std::fs::read_to_string(&stat)
            .is_ok_and(|s| s.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('T')))
        {
            assert!(began.elapsed() < PATIENCE, "worker {} did not stop", self.job);
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// SIGKILLs and reaps the worker.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits at most [`PATIENCE`] for the worker to exit, and asserts it succeeded.
    #[track_caller]
    pub fn finish(&mut self) {
        let began = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("poll a worker") {
                assert!(status.success(), "worker {} failed: {status}", self.job);
                return;
            }
            if began.elapsed() > PATIENCE {
                self.kill();
                panic!("worker {} did not exit within {PATIENCE:?}", self.job);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A small random number generator (xorshift), seeded and printed by the test.
pub struct Rng(u64);

impl Rng {
    /// A generator seeded from the clock, or from `LATCHKEY_TEST_SEED` when set (to run a
    /// failure again); prints the seed.
    pub fn from_clock(test: &str) -> Rng {
        let clock =
            || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos() as u64;
        let seed = std::env::var("LATCHKEY_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(clock) | 1;
        println!("{test}: seed {seed}");
        Rng(seed)
    }

    /// A generator seeded with `seed` (not 0).
    pub fn seeded(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    /// A number below `bound`.
    pub fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound
    }
}

/// Polls `condition` every few milliseconds until it holds, at most [`PATIENCE`].
#[track_caller]
pub fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let began = Instant::now();
    while !condition() {
        assert!(began.elapsed() < PATIENCE, "{what}: not within {PATIENCE:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}
