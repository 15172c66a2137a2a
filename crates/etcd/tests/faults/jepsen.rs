//! A Jepsen-style check: worker processes increment a fenced counter under the lock while
//! faults run (a worker SIGKILLed and replaced, the leader killed and restarted).

use std::time::{Duration, Instant};

use latchkey_testkit::EtcdCluster;

use crate::fenced::{check_counter, Etcd, Fence};
use crate::support::{wait_until, Rng, Worker};

/// Worker processes at a time, and the increments each is asked for.
const WORKERS: usize = 4;
const TIMES: u32 = 20;

/// What the workers reported, summed.
#[derive(Default, Debug)]
struct Tally {
    wrote: usize,
    rejected: usize,
    lost: usize,
    done: usize,
    /// Lock calls that failed for want of the cluster (`error Unavailable`, a session that
    /// lapsed while its request waited: `error HandleLost`), and releases of holds so lost:
    /// what a leader election longer than the TTL costs on a loaded machine. Not a fault
    /// of mutual exclusion; counted and printed.
    unavailable: usize,
    /// Lines that report any other failure.
    failures: Vec<String>,
}

impl Tally {
    /// Reads what `workers` reported by now.
    fn read(&mut self, workers: &mut [Worker]) {
        for worker in workers {
            self.add(worker.lines_so_far());
        }
    }

    fn add(&mut self, lines: Vec<String>) {
        for line in lines {
            let words: Vec<&str> = line.split(' ').collect();
            match words.as_slice() {
                ["wrote", ..] => self.wrote += 1,
                ["rejected", ..] => self.rejected += 1,
                ["lost", ..] => self.lost += 1,
                ["done", ..] => self.done += 1,
                ["error", "Unavailable:" | "HandleLost:", ..] | ["release-failed", _, "HandleLost:", ..] => {
                    self.unavailable += 1
                }
                _ => self.failures.push(line),
            }
        }
    }

    /// Reads until `condition` holds, at most [`PATIENCE`].
    #[track_caller]
    fn until(&mut self, workers: &mut [Worker], what: &str, condition: impl Fn(&Tally) -> bool) {
        wait_until(what, || {
            self.read(workers);
            condition(self)
        });
    }
}

/// Issue 10: 4 worker processes, each taking the lock 20 times to read the counter and
/// write it + 1 with a transaction fenced by its token, while a worker is SIGKILLed at a
/// random moment (and replaced) and the leader is killed (and restarted): afterwards the
/// counter is the number of accepted writes (0 lost updates), and every write a worker
/// saw accepted is among them. Lock calls may fail while the cluster has no leader (and a
/// session lapses if the election outlasts the TTL): those are counted, not failures.
#[test]
fn a_fenced_counter_loses_no_update_under_faults() {
    let mut cluster = EtcdCluster::start(3);
    let url = cluster.url_with("jepsen", "ttl=2s");
    let endpoints = cluster.endpoints().join(",");
    let etcd = Etcd::connect(&cluster.endpoints());
    let fence = Fence::new("jepsen-fence");
    fence.init(&etcd);
    let mut rng = Rng::from_clock("jepsen");
    let began = Instant::now();
    let times = TIMES.to_string();
    let job = ["count", &url, "job", &endpoints, "jepsen-fence", &times];
    let mut workers: Vec<Worker> = (0..WORKERS).map(|_| Worker::spawn(&job)).collect();
    let mut tally = Tally::default();

    tally.until(&mut workers, "the first increments", |t| t.wrote >= 15);
    std::thread::sleep(Duration::from_millis(rng.below(50)));
    workers[0].kill();
    println!("SIGKILLed a worker after {:?}", began.elapsed());
    tally.add(workers[0].rest());
    workers[0] = Worker::spawn(&job);

    tally.until(&mut workers, "increments after the SIGKILL", |t| t.wrote >= 35);
    let leader = cluster.leader();
    let killed = Instant::now();
    cluster.kill(leader);
    let before = tally.wrote;
    tally.until(&mut workers, "increments after the leader kill", |t| t.wrote >= before + 5);
    println!("killed the leader after {:?}; 5 increments {:?} later", began.elapsed(), killed.elapsed());
    cluster.restart(leader);

    tally.until(&mut workers, "every worker done", |t| t.done == WORKERS);
    for worker in &mut workers {
        worker.finish();
    }
    let accepted = check_counter(&fence, &etcd);
    println!("{accepted} accepted increments in {:?}: workers reported {tally:?}", began.elapsed());
    assert!(tally.wrote > 0, "no increment at all: {tally:?}");
    // The killed worker may have had a write accepted that it did not live to report.
    assert!(
        (tally.wrote..=tally.wrote + 1).contains(&accepted),
        "{accepted} writes accepted, {} reported accepted",
        tally.wrote
    );
    assert!(tally.failures.is_empty(), "failures: {:?}", tally.failures);
}
