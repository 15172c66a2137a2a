//! The jobs of worker processes: this test binary, run again on `worker::run` with the job
//! in [`JOB`]. Workers report through [`say`]; the test reads with [`Worker`](crate::support::Worker).

use std::time::Duration;

use latchkey::Scope;

use crate::fenced::Fence;
use crate::support::{say, JOB, PATIENCE};

/// The entry point of a worker process; in the test run itself, does nothing.
#[test]
fn run() {
    let Ok(job) = std::env::var(JOB) else { return };
    let fields: Vec<&str> = job.split('\u{1f}').collect();
    let (url, name) = (fields[1], fields[2]);
    let scope = Scope::open(url).expect("the worker opens the scope");
    match fields[0] {
        "hold" => hold(&scope, name),
        "act" => act(&scope, name, &Fence::connect(fields[3], fields[4])),
        "count" => count(&scope, name, &Fence::connect(fields[3], fields[4]), fields[5].parse().unwrap()),
        other => panic!("no job {other:?}"),
    }
}

/// `hold URL NAME`: takes the mutex, reports `held TOKEN`, and keeps it until killed.
fn hold(scope: &Scope, name: &str) {
    let guard = scope.lock_blocking_timeout(name, PATIENCE).expect("the worker's lock");
    say(format!("held {}", guard.fencing_token()));
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

/// `act URL NAME FENCE_URL TABLE`: takes the mutex, reports `held TOKEN`, then acts on the
/// fenced resource in a loop as a careful holder does: `lost N` (and stop) if the guard
/// says the hold is lost, else a fenced write, `wrote N` or `rejected N`. A thread reports
/// `lost-future` when `guard.lost()` completes.
fn act(scope: &Scope, name: &str, fence: &Fence) {
    let guard = scope.lock_blocking_timeout(name, PATIENCE).expect("the worker's lock");
    let token = guard.fencing_token();
    say(format!("held {token}"));
    let lost = guard.lost();
    let watcher = std::thread::spawn(move || {
        latchkey_model::block_on_until(lost, None);
        say("lost-future");
    });
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
    watcher.join().expect("the lost() thread");
    drop(guard);
}

/// `count URL NAME FENCE_URL TABLE N`: N times, takes the mutex and increments the fenced
/// counter as a careful holder does (a fenced read, a pause of 20 ms, a look at whether the
/// hold is lost, a fenced write of the value plus one), reporting
/// `inc VALUE` for each write the resource took and `rejected` for each it refused; a lock
/// that fails (a session ended under it) is taken again, and so is an increment whose
/// connection failed. Reports `done` at the end.
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
        match fence.increment(guard.fencing_token(), Duration::from_millis(20), || guard.is_lost()) {
            Ok(Some(value)) => {
                say(format!("inc {value}"));
                done += 1;
            }
            Ok(None) => say("rejected"),
            Err(e) => say(format!("retry {e}")),
        }
        let _ = guard.release();
    }
    say("done");
}
