//! The jobs of the worker processes of the `review2` suite. A worker reports through
//! lines that start with `@@ ` (see `support::worker::MARK`) and waits for the test on its stdin.

pub use crate::support::worker::{hold, kind, read_line, say};

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
