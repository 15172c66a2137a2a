//! The jobs of worker processes: this test binary, run again on `worker::run` with the job
//! in `JOB`.

use std::time::Duration;

use latchkey::Scope;
use latchkey_testkit::worker::{say, JOB, PATIENCE};

use crate::fenced::Fence;

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
        "act" => act(&scope, name, &Fence::connect(fields[3], fields[4])),
        "count" => count(&scope, name, &Fence::connect(fields[3], fields[4]), fields[5].parse().unwrap()),
        other => panic!("no job {other:?}"),
    }
}

/// `act URL NAME FENCE_URL KEY`: takes the mutex, reports `held TOKEN`, then acts on the
/// fenced value in a loop as a careful holder does: `lost N` (and stop) if the guard says
/// the hold is lost, else a fenced write, `wrote N` or `rejected N`.
fn act(scope: &Scope, name: &str, fence: &Fence) {
    let guard = scope.lock_blocking_timeout(name, PATIENCE).expect("the worker's lock");
    let token = guard.fencing_token();
    say(format!("held {token}"));
    for n in 0.. {
        if guard.is_lost() {
            say(format!("lost {n}"));
            break;
        }
        if fence.write(token, n) {
            say(format!("wrote {n}"));
        } else {
            say(format!("rejected {n}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(guard);
}

/// `count URL NAME FENCE_URL KEY N`: N times, takes the mutex and increments the fenced
/// value as a careful holder does (`inc VALUE` when the resource took it, `rejected` when it
/// did not or the hold was lost before the write); a lock that
/// fails is taken again (`retry ERROR`). Reports `done` at the end.
fn count(scope: &Scope, name: &str, fence: &Fence, n: usize) {
    let mut done = 0;
    while done < n {
        let guard = match scope.lock_blocking_timeout(name, PATIENCE) {
            Ok(guard) => guard,
            Err(e) => {
                say(format!("retry {e}"));
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        match fence.increment(guard.fencing_token(), || guard.is_lost()) {
            Some(value) => {
                say(format!("inc {value}"));
                done += 1;
            }
            None => say("rejected"),
        }
        let _ = guard.release();
    }
    say("done");
}
