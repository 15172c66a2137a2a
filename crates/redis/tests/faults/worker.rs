//! The jobs of worker processes: this test binary, run again on `worker::run` with the job
//! in `JOB`.

use std::time::Duration;

use latchkey::Scope;
use latchkey_testkit::worker::{say, JOB, PATIENCE};

/// The entry point of a worker process; in the test run itself, does nothing.
#[test]
fn run() {
    let Ok(job) = std::env::var(JOB) else { return };
    let fields: Vec<&str> = job.split('\u{1f}').collect();
    let (url, name) = (fields[1], fields[2]);
    let scope = Scope::open(url).expect("the worker opens the scope");
    match fields[0] {
        "hold" => {
            let guard = scope.lock_blocking_timeout(name, PATIENCE).expect("the worker's lock");
            say(format!("held {}", guard.fencing_token()));
            loop {
                std::thread::sleep(Duration::from_secs(60));
            }
        }
        other => panic!("no job {other:?}"),
    }
}
