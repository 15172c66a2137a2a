//! A Jepsen-style check: worker processes increment a fenced counter (on a server of its
//! own) under the lock, with a read, a pause and a fenced write (a read-modify-write that
//! only mutual exclusion keeps whole), while workers are SIGKILLed and started again and
//! their connections killed (`CLIENT KILL`).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use latchkey_testkit::worker::{Rng, Worker, PATIENCE};
use latchkey_testkit::RedisServer;

use crate::fenced::Fence;

const WORKERS: usize = 4;
const INCREMENTS: usize = 30;
/// Kills at most: each costs the others a TTL (2 s) before its lock lapses.
const KILLS: usize = 5;

/// Issue 12: no increment is lost: every value a worker wrote and saw accepted is distinct
/// (two holders at once would write the same value), and the counter ends between the
/// accepted increments and those plus the kills (a killed worker may have written once
/// without reporting it).
#[test]
fn a_fenced_counter_loses_no_update_under_faults() {
    let mut rng = Rng::from_clock("jepsen");
    let server = RedisServer::start();
    let resource = RedisServer::start();
    let url = server.url("ttl=2s&prefix=jepsen");
    let job = ["count", &url, "counter", &resource.url(""), "counter", &INCREMENTS.to_string()];
    let spawn = || Worker::spawn(&job);
    let mut workers: Vec<Worker> = (0..WORKERS).map(|_| spawn()).collect();
    let (mut accepted, mut rejected, mut kills, mut cuts) = (Vec::<i64>::new(), 0, 0, 0);
    let mut done = [false; WORKERS];
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
                } else {
                    println!("jepsen: worker {i}: {line}");
                }
            }
        }
        let victim = rng.below(WORKERS as u64) as usize;
        if done[victim] {
            continue;
        }
        match rng.below(10) {
            0..=1 if kills < KILLS => {
                workers[victim].kill();
                kills += 1;
                workers[victim] = spawn();
            }
            3..=5 => {
                let _ = server.cli(&["CLIENT", "KILL", "TYPE", "normal"]);
                cuts += 1;
            }
            _ => {}
        }
    }
    let value = Fence::connect(&resource.url(""), "counter").value();
    let distinct: HashSet<i64> = accepted.iter().copied().collect();
    println!(
        "jepsen: {} accepted increments, {rejected} rejected, counter {value}; {kills} kills, {cuts} CLIENT KILLs",
        accepted.len()
    );
    assert_eq!(distinct.len(), accepted.len(), "two holders wrote the same value: a lost update");
    assert!(value >= accepted.len() as i64, "the counter {value} lost accepted increments ({})", accepted.len());
    assert!(value <= (accepted.len() + kills) as i64, "the counter {value} counts increments nobody made");
}
