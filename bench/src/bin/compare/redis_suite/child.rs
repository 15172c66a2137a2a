//! The child processes of the `redis` suite: this binary again, started with a hidden first
//! argument that `main` hands to [`child_main`]; and what parent and child share.

use std::io::{self, BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use latchkey::Scope;
use latchkey_redis::Config;

use super::Raw;

/// Runs a child role if `args` (the arguments after the program name) name one.
/// Returns `false` when they do not.
pub fn child_main(args: &[String]) -> bool {
    match args.first().map(String::as_str) {
        Some(super::handoff::CHILD) => super::handoff::child(&args[1..]),
        Some(super::kill::CHILD) => super::kill::child(&args[1..]),
        _ => return false,
    }
    true
}

/// How long the raw lock sleeps between two tries of `SET NX` that found the key taken.
pub const RETRY_SLEEP: Duration = Duration::from_millis(1);

/// Which lock a child process takes.
#[derive(Clone, Copy, PartialEq)]
pub enum Kind {
    /// A mutex of latchkey's Redis scope.
    Ours,
    /// `SET NX PX`, tried again every [`RETRY_SLEEP`] until set, and a compare-and-delete.
    Raw,
}

impl Kind {
    pub fn arg(self) -> &'static str {
        match self {
            Kind::Ours => "ours",
            Kind::Raw => "raw",
        }
    }

    pub fn parse(arg: &str) -> Kind {
        match arg {
            "ours" => Kind::Ours,
            "raw" => Kind::Raw,
            other => panic!("unknown lock kind {other:?}"),
        }
    }
}

/// The lock of one child process.
pub enum ChildLock {
    Ours { _scope: Scope, mutex: latchkey::Mutex },
    Raw { raw: Box<Raw>, key: String },
}

impl ChildLock {
    /// The lock of `kind` on the server of the scope URL `url`: latchkey's mutex of the
    /// name `lock`, or the raw key `lock`.
    pub fn open(kind: Kind, url: &str, lock: &str) -> ChildLock {
        match kind {
            Kind::Ours => {
                let scope = Scope::open(url).expect("cannot open the Redis scope");
                let mutex = scope.mutex(lock).expect("cannot open the mutex");
                ChildLock::Ours { _scope: scope, mutex }
            }
            Kind::Raw => {
                let config = Config::parse(url).expect("a bad Redis URL");
                ChildLock::Raw { raw: Box::new(Raw::connect(&config)), key: lock.to_string() }
            }
        }
    }

    /// Takes the lock, calls `held`, releases it.
    pub fn cycle(&mut self, held: impl FnOnce()) {
        match self {
            ChildLock::Ours { mutex, .. } => {
                let guard = mutex.lock_blocking().expect("cannot take the lock");
                held();
                guard.release().expect("cannot release the lock");
            }
            ChildLock::Raw { raw, key } => {
                let token = raw.lock_retrying(key, RETRY_SLEEP);
                held();
                raw.unlock(key, &token);
            }
        }
    }
}

/// CLOCK_MONOTONIC in ns: comparable between the processes of one machine.
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a plain system call that fills `ts`.
    assert_eq!(unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) }, 0);
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A line to the parent.
pub fn say(line: &str) {
    let mut stdout = io::stdout().lock();
    writeln!(stdout, "{line}").and_then(|()| stdout.flush()).expect("cannot write to the parent");
}

/// A child process of this binary, killed and reaped on drop.
pub struct Proc {
    pub child: Child,
    stdin: Option<ChildStdin>,
    out: BufReader<ChildStdout>,
}

impl Proc {
    pub fn spawn(args: &[&str]) -> Proc {
        let exe = std::env::current_exe().expect("cannot find the compare binary");
        let mut child = Command::new(exe)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("cannot start a child process");
        let stdin = child.stdin.take();
        let out = BufReader::new(child.stdout.take().expect("piped"));
        Proc { child, stdin, out }
    }

    pub fn line(&mut self) -> String {
        let mut line = String::new();
        self.out.read_line(&mut line).expect("cannot read from the child process");
        assert!(!line.is_empty(), "the child process ended early");
        line.trim_end().to_string()
    }

    pub fn expect(&mut self, expected: &str) {
        let line = self.line();
        assert_eq!(line, expected, "unexpected line from the child process");
    }

    pub fn tell(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin is open");
        writeln!(stdin, "{line}").and_then(|()| stdin.flush()).expect("cannot write to the child process");
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
