//! The jobs of worker processes: this test binary, run again on `worker::run` with the job
//! in [`JOB`]. Workers report through [`say`]; the test reads with [`Worker`](crate::support::Worker).

use std::time::Duration;

use latchkey::Scope;

use crate::fenced::{increment, Etcd, Fence, Write};
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
        "act" => act(&scope, name, &endpoints(fields[3]), &Fence::new(fields[4])),
        "count" => count(&scope, name, &endpoints(fields[3]), &Fence::new(fields[4]), fields[5].parse().unwrap()),
        other => panic!("no job {other:?}"),
    }
}

fn endpoints(field: &str) -> Vec<String> {
    field.split(',').map(str::to_string).collect()
}

/// `hold URL NAME`: takes the mutex, reports `held TOKEN`, and keeps it until killed.
fn hold(scope: &Scope, name: &str) {
    let guard = scope.lock_blocking_timeout(name, PATIENCE).expect("the worker's lock");
    say(format!("held {}", guard.fencing_token()));
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

/// `act URL NAME ENDPOINTS FENCE`: takes the mutex, reports `held TOKEN`, then acts on the
/// fenced resource in a loop as a careful holder does: `lost N` (and stop) if the guard
/// says the hold is lost, else a fenced write, `wrote N` or `rejected N`. A thread reports
/// `lost-future` when `guard.lost()` completes.
fn act(scope: &Scope, name: &str, endpoints: &[String], fence: &Fence) {
    let guard = scope.lock_blocking_timeout(name, PATIENCE).expect("the worker's lock");
    let token = guard.fencing_token();
    say(format!("held {token}"));
    let lost = guard.lost();
    let watcher = std::thread::spawn(move || {
        latchkey_model::block_on_until(lost, None);
        say("lost-future");
    });
    let etcd = Etcd::connect(endpoints);
    for n in 0.. {
        if guard.is_lost() {
            say(format!("lost {n}"));
            break;
        }
        let value = format!("worker {n}");
        match etcd.run(|client| fence.rewrite(client, token, &value)) {
            Write::Accepted => say(format!("wrote {n}")),
            Write::Rejected => say(format!("rejected {n}")),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    watcher.join().expect("the lost() thread");
    drop(guard);
}

/// `count URL NAME ENDPOINTS FENCE N`: N times: takes the mutex, increments the fenced
/// counter (`wrote TOKEN READ`, `rejected TOKEN READ`, or `lost TOKEN` if the guard says
/// the hold was lost before the write), releases (`release-failed TOKEN ERROR`); reports
/// `error ERROR` when a lock fails, and `done` at the end.
fn count(scope: &Scope, name: &str, endpoints: &[String], fence: &Fence, times: u32) {
    let mutex = scope.mutex(name).expect("the mutex");
    let etcd = Etcd::connect(endpoints);
    for _ in 0..times {
        let guard = match mutex.lock_blocking_timeout(PATIENCE) {
            Ok(guard) => guard,
            Err(e) => {
                say(format!("error {:?}: {e}", e.kind()));
                continue;
            }
        };
        let token = guard.fencing_token();
        let step = etcd.run(|client| increment(fence, client, token, Duration::ZERO, || guard.is_lost()));
        match step {
            Some((Write::Accepted, read)) => say(format!("wrote {token} {read}")),
            Some((Write::Rejected, read)) => say(format!("rejected {token} {read}")),
            None => say(format!("lost {token}")),
        }
        if let Err(e) = guard.release() {
            say(format!("release-failed {token} {:?}: {e}", e.kind()));
        }
    }
    say("done");
}
