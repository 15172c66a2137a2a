//! Issue 8, torture: six worker processes loop on a mutex, a reader-writer lock (reading
//! and writing) and a semaphore of 3 in one namespace, while the test SIGKILLs one of four
//! of them every few milliseconds (half the time one that holds a lock, as `inspect`
//! shows) and starts another in its place, 3000 times. The other two are never killed:
//! they must keep making progress.
//!
//! # How a double grant is told from a killed holder
//!
//! Every worker process has an id of its own. Right after a grant it appends
//! `m+ TOKEN ID` to one log file (`w+`/`r+` for the reader-writer lock, `s+` for the
//! semaphore), and right before releasing `m- TOKEN ID` (`w-`, `r-`, `s-`); a wait that
//! timed out or a try that was refused appends `m~ 0 ID` (only to diagnose a stuck
//! waiter). Before each SIGKILL the test appends `k ID`. Each line is one `write` to the
//! file opened with `O_APPEND`, so the log is one total order, consistent with causality:
//! a line written after another one was written lands after it.
//!
//! A holder `H` logs its grant while holding, and logs its release before releasing; it is
//! killed only after its `k` line. Say a grant `G` is logged while `H` has logged a grant
//! and no release. If `H` has no `k` line before `G`'s line, `H` was alive when `G` was
//! logged and had not released: both held at once. If `H` logs its release after `G`'s
//! line, the same holds, `k` line or not. Only if `H` was condemned (`k`) before `G`'s line
//! and never logs a release may it have died before `G` was granted: that conflict is
//! excused. So the check never blames a killed holder, and misses only a double grant in
//! the instant between a `k` line and the death it announces.
//!
//! With that, the log must show: at most one holder of the mutex, with fencing tokens
//! strictly increasing in log order; a writer alone, readers only beside readers, and a
//! writer's token above every grant logged before it and below every grant logged after;
//! at most 3 holders of the semaphore.
//!
//! Progress: every worker reports each iteration it completes; a live worker that
//! completes none for [`STUCK`] is a stuck waiter, reported with every worker's last log
//! lines and the locks' states. Afterwards, with every worker killed, a fresh process must
//! get the mutex, the write hold and all 3 permits at once (nothing is left held by the
//! dead).

use std::collections::{HashMap, HashSet};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use latchkey::{ErrorKind, Guard, Result, Scope};

use super::worker::say;
use super::{Dirs, Proc};
use crate::support::Rng;

const MUTEX: &str = "t/mutex";
const RWLOCK: &str = "t/rwlock";
const SEMAPHORE: &str = "t/semaphore";
const PERMITS: u32 = 3;

/// Workers at once; the first `STEADY` are never killed.
const WORKERS: usize = 6;
const STEADY: usize = 2;
/// SIGKILLs in all.
const KILLS: usize = 3000;
/// The longest pause between two kills, in microseconds.
const PAUSE_US: u64 = 20_000;
/// The longest a live worker may go without completing an iteration.
const STUCK: Duration = Duration::from_secs(10);

/// Issue 8, torture: 3000 SIGKILLs of workers that loop on a mutex, a reader-writer lock
/// and a semaphore of 3 never break exclusion, the semaphore's bound or the order of
/// fencing tokens, never leave a waiter stuck, and leave nothing held.
#[test]
fn thousands_of_sigkills_never_break_exclusion_bounds_token_order_or_progress() {
    let dirs = Dirs::new("latchkey-trust-torture");
    let log = dirs.path("log");
    fs::write(&log, "").unwrap();
    let scope = Scope::open(&dirs.url()).unwrap();
    let kill_log = OpenOptions::new().append(true).open(&log).unwrap();
    let note_kill = |id: u64| (&kill_log).write_all(format!("k {id}\n").as_bytes()).unwrap();

    struct Live {
        proc: Proc,
        id: u64,
        /// When it started, or last completed an iteration.
        since: Instant,
        iterations: u64,
    }
    let start_worker = |id: u64| Live {
        proc: Proc::spawn(&["torture", &dirs.url(), &id.to_string(), log.to_str().unwrap()]),
        id,
        since: Instant::now(),
        iterations: 0,
    };
    let mut live: Vec<Live> = (0..WORKERS as u64).map(start_worker).collect();
    let mut rng = Rng::new(0x7047_7e57);
    let started = Instant::now();
    let mut steady_iterations = [0u64; STEADY];
    for kills in 0..KILLS {
        std::thread::sleep(Duration::from_micros(rng.below(PAUSE_US)));
        for worker in &mut live {
            while worker.proc.try_line().is_some() {
                worker.iterations += 1;
                worker.since = Instant::now();
            }
            if let Some(status) = worker.proc.exited() {
                panic!("worker {} ended by itself: {} (see its stderr above)", worker.id, super::describe(status));
            }
        }
        if let Some(stuck) = live.iter().find(|w| w.since.elapsed() > STUCK) {
            let text = fs::read_to_string(&log).unwrap();
            let workers: Vec<String> = live
                .iter()
                .map(|w| {
                    let suffix = format!(" {}", w.id);
                    let own: Vec<&str> = text.lines().filter(|l| l.ends_with(&suffix)).collect();
                    format!(
                        "worker {} (pid {}): {} iterations, the last {:?} ago, last log lines {:?}",
                        w.id,
                        w.proc.pid(),
                        w.iterations,
                        w.since.elapsed(),
                        &own[own.len().saturating_sub(4)..]
                    )
                })
                .collect();
            panic!(
                "a waiter is stuck: worker {} completed no iteration for {STUCK:?}; {} kills so far.\nworkers:\n  {}\n\
                 locks:\n  {}",
                stuck.id,
                kills,
                workers.join("\n  "),
                states(&scope).replace("; ", "\n  ")
            );
        }
        // Half the time, a worker that holds one of the locks now (as `inspect` says), if
        // one may be killed; otherwise any of those that may be.
        let holding = [MUTEX, RWLOCK, SEMAPHORE][rng.below(3) as usize];
        let holders: Vec<u32> = scope.inspect(holding).map(|s| s.holders.iter().map(|h| h.pid).collect()).unwrap();
        let victim = live
            .iter()
            .enumerate()
            .skip(STEADY)
            .find(|(_, w)| rng.below(2) == 0 && holders.contains(&w.proc.pid()))
            .map(|(i, _)| i)
            .unwrap_or_else(|| STEADY + rng.below((WORKERS - STEADY) as u64) as usize);
        note_kill(live[victim].id);
        live[victim].proc.kill();
        live[victim] = start_worker((WORKERS + kills) as u64);
    }
    let elapsed = started.elapsed();
    for (i, worker) in live.iter_mut().enumerate() {
        while worker.proc.try_line().is_some() {
            worker.iterations += 1;
        }
        if i < STEADY {
            steady_iterations[i] = worker.iterations;
        }
        note_kill(worker.id);
        worker.proc.kill();
    }
    drop(live);

    let mut fresh = Proc::spawn(&["final", &dirs.url()]);
    let after = fresh.line("whether it could take everything");
    fresh.finish();

    let report = check(&fs::read_to_string(&log).unwrap());
    eprintln!(
        "torture: {KILLS} kills in {elapsed:?}; {} grants (mutex {}, write {}, read {}, semaphore {}); {} kills \
         of a holder; the steady workers completed {steady_iterations:?} iterations",
        report.grants.values().sum::<u64>(),
        report.grants.get("m").unwrap_or(&0),
        report.grants.get("w").unwrap_or(&0),
        report.grants.get("r").unwrap_or(&0),
        report.grants.get("s").unwrap_or(&0),
        report.kills_of_holders,
    );
    assert!(
        report.violations.is_empty(),
        "{} violations; the first ones: {:#?}",
        report.violations.len(),
        &report.violations[..report.violations.len().min(10)]
    );
    assert_eq!(after, "free", "after every worker was killed, a fresh process could not take everything");
    assert!(steady_iterations.iter().all(|&n| n > 0), "the steady workers made progress: {steady_iterations:?}");
}

/// Issue 8, torture: the log check itself, on made-up logs (no lock involved): it catches
/// a double grant, a token out of order, a fourth permit and a reader beside a writer, and
/// excuses a holder killed before the next grant, unless that holder released later.
#[test]
fn the_torture_log_check_tells_a_double_grant_from_a_killed_holder() {
    let violations = |log: &str| check(log).violations.len();
    assert_eq!(violations("m+ 1 1\nk 1\nm+ 2 2\nm- 2 2\n"), 0, "a killed holder, then the next");
    assert_eq!(violations("k 1\nm+ 1 1\nm+ 2 2\n"), 0, "condemned before its grant was logged");
    assert_eq!(violations("m+ 1 1\nm+ 2 2\n"), 1, "two holders");
    assert_eq!(violations("m+ 1 1\nk 1\nm+ 2 2\nm- 1 1\n"), 1, "condemned, yet alive and holding");
    assert_eq!(violations("m+ 1 1\nm+ 2 2\nk 1\n"), 1, "condemned only after the next grant");
    assert_eq!(violations("m+ 5 1\nm- 5 1\nm+ 4 2\n"), 1, "a token out of order");
    assert_eq!(violations("s+ 1 1\ns+ 2 2\ns+ 3 3\ns+ 4 4\n"), 1, "four permits of three");
    assert_eq!(violations("s+ 1 1\ns+ 2 2\ns+ 3 3\nk 1\ns+ 4 4\n"), 0, "one of three killed");
    assert_eq!(violations("r+ 1 1\nr+ 2 2\nr- 1 1\nr- 2 2\nw+ 3 3\n"), 0, "readers, then a writer");
    assert_eq!(violations("r+ 1 1\nw+ 2 2\n"), 1, "a writer beside a reader");
    assert_eq!(violations("w+ 3 1\nw- 3 1\nr+ 2 2\n"), 1, "a reader's token below the writer's before it");
    assert_eq!(violations("w+ 3 1\nr+ 4 2\n"), 1, "a reader beside a writer");
}

fn states(scope: &Scope) -> String {
    [MUTEX, RWLOCK, SEMAPHORE]
        .iter()
        .map(|name| match scope.inspect(name) {
            Ok(state) => format!("{state:?}"),
            Err(err) => format!("{name}: {err}"),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// What the log shows.
struct Report {
    violations: Vec<String>,
    grants: HashMap<String, u64>,
    kills_of_holders: usize,
}

/// Checks the log (see the module doc).
fn check(log: &str) -> Report {
    // Pass 1: which grants were released (by a holder still alive when it said so).
    let mut released: HashSet<(char, u64, u64)> = HashSet::new();
    let mut lines = Vec::new();
    for line in log.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let parsed = match words.as_slice() {
            ["k", id] => id.parse().ok().map(|id| ('k', '+', 0, id)),
            [op, token, id] if op.len() == 2 => {
                let mut chars = op.chars();
                let (kind, sign) = (chars.next().unwrap(), chars.next().unwrap());
                match (token.parse(), id.parse()) {
                    (Ok(token), Ok(id)) if "mwrs".contains(kind) && "+-~".contains(sign) => {
                        Some((kind, sign, token, id))
                    }
                    _ => None,
                }
            }
            _ => None,
        };
        match parsed {
            Some(event) => {
                if event.1 == '-' {
                    released.insert((event.0, event.2, event.3));
                }
                lines.push(event);
            }
            None => eprintln!("torture: ignored a malformed log line {line:?}"),
        }
    }

    // Pass 2: replay.
    let mut report = Report { violations: Vec::new(), grants: HashMap::new(), kills_of_holders: 0 };
    let mut condemned: HashSet<u64> = HashSet::new();
    // Outstanding holds: (kind, token, id); the reader-writer lock's kind is 'w' or 'r'.
    let mut mutex: Vec<(char, u64, u64)> = Vec::new();
    let mut rwlock: Vec<(char, u64, u64)> = Vec::new();
    let mut semaphore: Vec<(char, u64, u64)> = Vec::new();
    let mut last_mutex_token = 0;
    let (mut rw_max, mut rw_floor) = (0u64, 0u64);
    for (n, &(kind, sign, token, id)) in lines.iter().enumerate() {
        let at = n + 1;
        if sign == '~' {
            continue; // a wait that timed out, or a try that was refused
        }
        if kind == 'k' {
            let holds = mutex.iter().chain(&rwlock).chain(&semaphore).any(|h| h.2 == id);
            report.kills_of_holders += usize::from(holds);
            condemned.insert(id);
            continue;
        }
        let holds = match kind {
            'm' => &mut mutex,
            'w' | 'r' => &mut rwlock,
            _ => &mut semaphore,
        };
        if sign == '-' {
            match holds.iter().position(|h| *h == (kind, token, id)) {
                Some(i) => {
                    holds.swap_remove(i);
                }
                None => report.violations.push(format!(
                    "line {at}: {kind}- {token} {id}: worker {id} released a hold the log shows no grant of"
                )),
            }
            continue;
        }
        *report.grants.entry(kind.to_string()).or_default() += 1;
        // Holders that may have died before this grant: condemned, and never releasing.
        holds.retain(|h| !condemned.contains(&h.2) || released.contains(h));
        let grant = (kind, token, id);
        match kind {
            'm' => {
                if let Some(other) = holds.first() {
                    report.violations.push(format!(
                        "line {at}: the mutex was granted to worker {id} (token {token}) while worker {} held it \
                         (token {})",
                        other.2, other.1
                    ));
                }
                if token <= last_mutex_token {
                    report.violations.push(format!(
                        "line {at}: mutex token {token} (worker {id}) is not above the previous grant's {last_mutex_token}"
                    ));
                }
                last_mutex_token = token;
            }
            'w' => {
                if let Some(other) = holds.first() {
                    report.violations.push(format!(
                        "line {at}: the write hold was granted to worker {id} (token {token}) while worker {} held \
                         {} (token {})",
                        other.2,
                        if other.0 == 'w' { "the write hold" } else { "a read hold" },
                        other.1
                    ));
                }
                if token <= rw_max {
                    report.violations.push(format!(
                        "line {at}: write token {token} (worker {id}) is not above the grant logged before it ({rw_max})"
                    ));
                }
                rw_floor = token;
            }
            'r' => {
                if let Some(writer) = holds.iter().find(|h| h.0 == 'w') {
                    report.violations.push(format!(
                        "line {at}: a read hold was granted to worker {id} (token {token}) while worker {} held the \
                         write hold (token {})",
                        writer.2, writer.1
                    ));
                }
                if token <= rw_floor {
                    report.violations.push(format!(
                        "line {at}: read token {token} (worker {id}) is not above the last writer's ({rw_floor})"
                    ));
                }
            }
            _ => {
                if holds.len() + 1 > PERMITS as usize {
                    report.violations.push(format!(
                        "line {at}: worker {id} (token {token}) was granted a permit of the semaphore of {PERMITS} \
                         while {} live workers held one: {:?}",
                        holds.len(),
                        holds.iter().map(|h| h.2).collect::<Vec<_>>()
                    ));
                }
            }
        }
        if kind == 'w' || kind == 'r' {
            rw_max = rw_max.max(token);
        }
        holds.push(grant);
    }
    report
}

/// A worker's job: loops on the three locks forever (until it is killed), logging each
/// grant and release (see the module doc) and reporting `i` after each iteration.
pub fn worker(url: &str, id: u64, log: &Path) {
    let scope = Scope::open(url).expect("a torture worker opens the namespace");
    let mutex = scope.mutex(MUTEX).unwrap();
    let rwlock = scope.rwlock(RWLOCK).unwrap();
    let semaphore = scope.semaphore(SEMAPHORE, PERMITS).unwrap();
    let file = OpenOptions::new().append(true).open(log).unwrap();
    let note = |what: &str, token: u64| (&file).write_all(format!("{what} {token} {id}\n").as_bytes()).unwrap();
    let mut rng = Rng::new(id.wrapping_mul(0x9e37) ^ u64::from(std::process::id()));
    loop {
        let how = rng.below(8);
        let wait = Duration::from_micros(rng.below(2_000));
        let granted = match how {
            0 => mutex.try_lock(),
            1 | 2 => timed(mutex.lock_blocking_timeout(wait)),
            _ => mutex.lock_blocking().map(Some),
        };
        match granted.unwrap() {
            Some(guard) => hold(guard, "m", &note, &mut rng),
            None => note(&format!("{}~", "m"), 0),
        }

        let write = rng.below(3) == 0;
        let granted = match (write, how) {
            (true, 0) => rwlock.try_write(),
            (true, 1 | 2) => timed(rwlock.write_blocking_timeout(wait)),
            (true, _) => rwlock.write_blocking().map(Some),
            (false, 0) => rwlock.try_read(),
            (false, 1 | 2) => timed(rwlock.read_blocking_timeout(wait)),
            (false, _) => rwlock.read_blocking().map(Some),
        };
        match granted.unwrap() {
            Some(guard) => hold(guard, if write { "w" } else { "r" }, &note, &mut rng),
            None => note(&format!("{}~", if write { "w" } else { "r" }), 0),
        }

        let granted = match how {
            0 => semaphore.try_acquire(1),
            1 | 2 => timed(semaphore.acquire_blocking_timeout(1, wait)),
            _ => semaphore.acquire_blocking(1).map(Some),
        };
        match granted.unwrap() {
            Some(guard) => hold(guard, "s", &note, &mut rng),
            None => note(&format!("{}~", "s"), 0),
        }
        say("i");
    }
}

/// A timed-out wait is `None`; other errors stay errors.
fn timed(result: Result<Guard<'_>>) -> Result<Option<Guard<'_>>> {
    match result {
        Ok(guard) => Ok(Some(guard)),
        Err(err) if err.kind() == ErrorKind::Timeout => Ok(None),
        Err(err) => Err(err),
    }
}

/// Logs the grant, holds a moment, logs the release, releases.
fn hold(guard: Guard<'_>, kind: &str, note: &dyn Fn(&str, u64), rng: &mut Rng) {
    let token = guard.fencing_token();
    note(&format!("{kind}+"), token);
    match rng.below(4) {
        0 => {}
        1 => std::thread::yield_now(),
        _ => std::thread::sleep(Duration::from_micros(rng.below(300))),
    }
    note(&format!("{kind}-"), token);
    guard.release().expect("a live holder releases");
}

/// The final check's job: takes the mutex, the write hold and all the permits at once with
/// `try_*`, retrying for a while (the dead holders' locks may be freed a moment after they
/// died). Reports `free`, or `stuck` and the states.
pub fn final_check(url: &str) {
    let scope = Scope::open(url).unwrap();
    let mutex = scope.mutex(MUTEX).unwrap();
    let rwlock = scope.rwlock(RWLOCK).unwrap();
    let semaphore = scope.semaphore(SEMAPHORE, PERMITS).unwrap();
    let start = Instant::now();
    loop {
        let all = (mutex.try_lock().unwrap(), rwlock.try_write().unwrap(), semaphore.try_acquire(PERMITS).unwrap());
        if let (Some(_), Some(_), Some(_)) = all {
            return say("free");
        }
        drop(all);
        if start.elapsed() > Duration::from_secs(30) {
            return say(format!("stuck after 30 s: {}", states(&scope)));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
