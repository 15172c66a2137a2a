//! A Jepsen-style check: worker processes increment a counter row under the lock, with a
//! read and a fenced write (a read-modify-write that only mutual exclusion keeps whole),
//! while faults run: workers SIGKILLed and started again, their sessions ended by the
//! server (`pg_terminate_backend`), the server itself killed and started again.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use latchkey_testkit::PostgresServer;

use crate::fenced::Fence;
use crate::support::{url, Rng, Worker, PATIENCE};

const WORKERS: usize = 4;
/// Increments each worker makes.
const INCREMENTS: usize = 40;

/// Issue 11: no increment is lost: every value a worker wrote and saw accepted is
/// distinct (two holders at once would write the same value), the counter ends at least at
/// the number of accepted increments, and above it by no more than the increments that
/// killed workers may have written without reporting.
#[test]
fn a_fenced_counter_loses_no_update_under_faults() {
    let mut rng = Rng::from_clock("jepsen");
    let mut server = PostgresServer::start();
    let fence_url = server.url("");
    let spawn = |server: &PostgresServer, i: usize| {
        let url = url(server, "jepsen", "2s", &format!("application_name=jepsen-{i}"));
        Worker::spawn(&["count", &url, "counter", &server.url(""), "jepsen_counter", &INCREMENTS.to_string()])
    };
    drop(Fence::connect(&fence_url, "jepsen_counter"));
    let mut workers: Vec<Worker> = (0..WORKERS).map(|i| spawn(&server, i)).collect();
    let mut accepted: Vec<i64> = Vec::new();
    let (mut done, mut kills, mut terminations, mut restarts, mut rejected) = (vec![false; WORKERS], 0, 0, 0, 0);
    let began = Instant::now();
    while done.iter().any(|d| !d) {
        assert!(began.elapsed() < 4 * PATIENCE, "the workers did not finish");
        std::thread::sleep(Duration::from_millis(100 + rng.below(200)));
        for (i, worker) in workers.iter_mut().enumerate() {
            for line in worker.lines_so_far() {
                if let Some(value) = line.strip_prefix("inc ") {
                    accepted.push(value.parse().unwrap());
                } else if line == "rejected" {
                    rejected += 1;
                } else if line == "done" {
                    done[i] = true;
                }
            }
        }
        let victim = rng.below(WORKERS as u64) as usize;
        if done[victim] {
            continue;
        }
        match rng.below(10) {
            0..=2 => {
                // The worker's lines so far were read above; it may have written once more.
                workers[victim].kill();
                kills += 1;
                workers[victim] = spawn(&server, victim);
            }
            3..=5 => {
                let app = format!("jepsen-{victim}");
                server.psql(&format!(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = '{app}'"
                ));
                terminations += 1;
            }
            6 if restarts < 2 => {
                server.restart();
                restarts += 1;
            }
            _ => {}
        }
    }
    let fence = Fence::connect(&fence_url, "jepsen_counter");
    let value = fence.value();
    let distinct: HashSet<i64> = accepted.iter().copied().collect();
    println!(
        "jepsen: {} accepted increments, {rejected} rejected, counter {value}; {kills} kills, \
         {terminations} terminations, {restarts} server restarts",
        accepted.len()
    );
    assert_eq!(distinct.len(), accepted.len(), "two holders wrote the same value: a lost update");
    assert!(value >= accepted.len() as i64, "the counter {value} lost accepted increments ({})", accepted.len());
    assert!(value <= (accepted.len() + kills) as i64, "the counter {value} counts increments nobody made");
}
