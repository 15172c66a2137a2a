//! The jobs of the worker processes of the `review2` suite. A worker reports through
//! lines that start with `@@ ` (see [`super::MARK`]) and waits for the test on its stdin.

use std::io::{BufRead, Write};
use std::time::Duration;

use latchkey::{Error, Scope};

/// Set to the job, its fields separated by U+001F, in a worker process.
pub const ENV: &str = "LATCHKEY_REVIEW2_WORKER";

/// The entry point of a worker process; in the test run itself, does nothing.
#[test]
fn run() {
    let Ok(job) = std::env::var(ENV) else { return };
    let fields: Vec<&str> = job.split('\u{1f}').collect();
    let url = fields[1];
    match fields[0] {
        "hold" => hold(url, fields[2]),
        other if super::threads::job(other, url, &fields[2..]) => {}
        other if super::signals::job(other, url, &fields[2..]) => {}
        other if super::pids::job(other, url, &fields[2..]) => {}
        other => super::deleted::job(other, url, &fields[2..]),
    }
    std::process::exit(0);
}

/// Reports `line` to the test.
pub fn say(line: impl AsRef<str>) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}{}", super::MARK, line.as_ref()).unwrap();
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

/// Takes the mutex, reports `held T`, and keeps it until stdin ends (or a line comes).
fn hold(url: &str, name: &str) {
    let scope = Scope::open(url).unwrap();
    let mutex = scope.mutex(name).unwrap();
    let guard = match mutex.lock_blocking_timeout(Duration::from_secs(30)) {
        Ok(guard) => guard,
        Err(err) => return say(format!("error {}", kind(&err))),
    };
    say(format!("held {}", guard.fencing_token()));
    let _ = read_line();
    drop(guard);
}
