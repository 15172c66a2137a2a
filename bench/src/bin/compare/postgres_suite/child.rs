//! The child processes of the `postgres` suite: this binary again, started with a hidden
//! first argument that `main` hands to [`child_main`]; and what parent and child share.

use std::io::{self, BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use latchkey::Scope;

use super::{advisory_key, raw_config, Raw};

/// Runs a child role if `args` (the arguments after the program name) name one.
/// Returns `false` when they do not.
pub fn child_main(args: &[String]) -> bool {
    match args.first().map(String::as_str) {
        Some(super::handoff::CHILD) => super::handoff::child(&args[1..]),
        Some(super::terminate::CHILD) => super::terminate::child(&args[1..]),
        _ => return false,
    }
    true
}

/// Which lock a child process takes.
#[derive(Clone, Copy, PartialEq)]
pub enum Kind {
    /// A mutex of latchkey's PostgreSQL scope.
    Ours,
    /// `pg_advisory_lock` on a raw connection.
    Advisory,
}

impl Kind {
    pub fn arg(self) -> &'static str {
        match self {
            Kind::Ours => "ours",
            Kind::Advisory => "advisory",
        }
    }

    pub fn parse(arg: &str) -> Kind {
        match arg {
            "ours" => Kind::Ours,
            "advisory" => Kind::Advisory,
            other => panic!("unknown lock kind {other:?}"),
        }
    }
}

/// The lock of one child process.
pub enum ChildLock {
    Ours { _scope: Scope, mutex: latchkey::Mutex },
    Advisory { raw: Box<Raw>, key: i64 },
}

impl ChildLock {
    /// The lock of `kind` on `name`, on the server of the scope URL `url`; the advisory
    /// lock's key is [`advisory_key`] of `name`.
    pub fn open(kind: Kind, url: &str, name: &str) -> ChildLock {
        match kind {
            Kind::Ours => {
                let scope = Scope::open(url).expect("cannot open the PostgreSQL scope");
                let mutex = scope.mutex(name).expect("cannot open the mutex");
                ChildLock::Ours { _scope: scope, mutex }
            }
            Kind::Advisory => {
                ChildLock::Advisory { raw: Box::new(Raw::connect(&raw_config(url))), key: advisory_key(name) }
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
            ChildLock::Advisory { raw, key } => {
                raw.lock(*key);
                held();
                raw.unlock(*key);
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
