//! What the suites share: a namespace directory per test, the binary, and commands that
//! hold a lock until told to stop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How long a test waits for a state it expects (generous: the machine may be loaded).
pub const PATIENCE: Duration = Duration::from_secs(10);

/// A namespace directory of one test, removed when dropped.
pub struct Namespace {
    dir: PathBuf,
    /// The scope URL, `host:/tmp/latchkey-cli-test-<pid>-<n>`.
    url: String,
}

impl Namespace {
    pub fn new() -> Namespace {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("latchkey-cli-test-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let url = format!("host:{}", dir.display());
        Namespace { dir, url }
    }

    /// A test of the scope `url` (another scope than the host's); the directory is still
    /// made, for the test's files.
    pub fn at(url: String) -> Namespace {
        let mut ns = Namespace::new();
        ns.url = url;
        ns
    }

    /// The scope URL, `host:DIR`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The namespace directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A file path in a directory of its own next to the namespace (not inside it: the
    /// namespace directory must not be touched by anyone but latchkey).
    pub fn file(&self, name: &str) -> PathBuf {
        let dir = self.dir.with_extension("files");
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    /// `latchkey SUBCOMMAND --scope URL`.
    pub fn latchkey(&self, subcommand: &str) -> Command {
        let mut command = latchkey();
        command.args([subcommand, "--scope", &self.url]);
        command
    }

    /// Starts `latchkey run ARGS -- sh -c 'echo $$ > FILE; exec sleep 30'` and waits until
    /// the command runs, which it does only while holding the lock.
    pub fn hold(&self, args: &[&str]) -> Holding {
        let mut holding = self.start_holding(args);
        holding.command_pid = holding.wait_for_command();
        holding
    }

    /// Starts a holder without waiting for it to get the lock.
    pub fn start_holding(&self, args: &[&str]) -> Holding {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let pid_file = self.file(&format!("holder-{}.pid", NEXT.fetch_add(1, Ordering::Relaxed)));
        let script = format!("echo $$ > '{}'; exec sleep 30", pid_file.display());
        let child = self
            .latchkey("run")
            .args(args)
            .args(["--", "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("start latchkey run");
        Holding { latchkey: Some(child), command_pid: 0, pid_file }
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_dir_all(self.dir.with_extension("files"));
    }
}

/// The binary under test.
pub fn latchkey() -> Command {
    Command::new(env!("CARGO_BIN_EXE_latchkey"))
}

/// Runs `command` to the end: exit code, stdout, stderr.
pub fn output(command: &mut Command) -> (i32, String, String) {
    let Output { status, stdout, stderr } = command.stdin(Stdio::null()).output().expect("run latchkey");
    let code = status.code().unwrap_or_else(|| panic!("latchkey was killed: {status:?}"));
    (code, String::from_utf8_lossy(&stdout).into_owned(), String::from_utf8_lossy(&stderr).into_owned())
}

/// `latchkey run ARGS` in `ns`: its exit code and stderr.
pub fn run(ns: &Namespace, args: &[&str]) -> (i32, String) {
    let (code, _, stderr) = output(ns.latchkey("run").args(args));
    (code, stderr)
}

/// `latchkey status --json NAMES` in `ns`, parsed.
pub fn status_json(ns: &Namespace, names: &[&str]) -> Vec<serde_json::Value> {
    let (code, stdout, stderr) = output(ns.latchkey("status").arg("--json").args(names));
    assert_eq!(code, 0, "status failed: {stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(report["scope"], ns.url.as_str(), "{stdout}");
    if ns.url.starts_with("host:") {
        assert_eq!(report["directory"], ns.dir.display().to_string(), "{stdout}");
    }
    match &report["locks"] {
        serde_json::Value::Array(entries) => entries.clone(),
        other => panic!("status --json printed no array of locks ({other:?}): {stdout}"),
    }
}

/// Polls `done` until it is true or `PATIENCE` has passed; returns whether it became true.
pub fn eventually(mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether process `pid` is gone: no such process, or a zombie nobody has reaped yet
/// (it no longer runs; reaping is up to whichever process adopted it).
pub fn is_gone(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    if unsafe { libc::kill(pid, 0) } == -1 {
        return std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
}

/// Sends `signal` to `pid`.
pub fn signal(pid: i32, signal: i32) {
    // SAFETY: a plain kill(2).
    assert_eq!(unsafe { libc::kill(pid, signal) }, 0, "kill({pid}, {signal})");
}

/// A `latchkey run` whose command sleeps; SIGKILLed (and so its command too) if dropped
/// while still running.
pub struct Holding {
    latchkey: Option<Child>,
    /// The command's pid, once it runs.
    pub command_pid: i32,
    pid_file: PathBuf,
}

impl Holding {
    /// The pid of the `latchkey run` process.
    pub fn latchkey_pid(&self) -> u32 {
        self.latchkey.as_ref().expect("running").id()
    }

    /// Waits until the command has started (written its pid); panics after `PATIENCE`.
    fn wait_for_command(&self) -> i32 {
        let mut pid = None;
        let started = eventually(|| {
            pid = read_pid(&self.pid_file);
            pid.is_some()
        });
        assert!(started, "the command of latchkey run did not start within {PATIENCE:?}");
        pid.unwrap()
    }

    /// Whether the command has started by now.
    pub fn has_started(&self) -> bool {
        read_pid(&self.pid_file).is_some()
    }

    /// Ends the command with SIGTERM and returns how `latchkey run` exited.
    pub fn finish(mut self) -> ExitStatus {
        signal(self.command_pid, libc::SIGTERM);
        self.latchkey.take().unwrap().wait().unwrap()
    }

    /// Waits for `latchkey run` to end by itself (at most `PATIENCE`), and reaps it.
    pub fn wait_latchkey(mut self) -> ExitStatus {
        let mut child = self.latchkey.take().unwrap();
        let mut status = None;
        let ended = eventually(|| {
            status = child.try_wait().unwrap();
            status.is_some()
        });
        if !ended {
            let _ = child.kill();
        }
        assert!(ended, "latchkey run did not end within {PATIENCE:?}");
        status.unwrap()
    }

    /// SIGKILLs `latchkey run` (not its command) and reaps it.
    pub fn kill_latchkey(mut self) -> ExitStatus {
        let mut child = self.latchkey.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap()
    }
}

fn read_pid(path: &Path) -> Option<i32> {
    let text = std::fs::read_to_string(path).ok()?;
    text.strip_suffix('\n')?.parse().ok()
}

impl Drop for Holding {
    fn drop(&mut self) {
        if let Some(mut child) = self.latchkey.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
