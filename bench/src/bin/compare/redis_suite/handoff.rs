//! `redis/handoff/2-processes`: two children take the same lock in turn, each [`ITERS`]
//! times { acquire; release }, started together: latchkey's mutex, or the raw pair
//! (`SET key token NX PX`, tried again every [`RETRY_SLEEP`] while the key is taken, then a
//! compare-and-delete), a connection per child. Each records, on the monotonic clock (the
//! same for every process of the machine), when it was granted and when it began to
//! release; the parent merges the two records, checks that no grant came before the other
//! process began its release, and counts the changes of holder.
//!
//! Ours is FIFO: a process that releases finds the other queued (and woken by the release's
//! `PUBLISH`) and queues behind it, so nearly every grant is a hand-off. The raw pair has no
//! queue: the process that releases can set the key again before the other's next try, so
//! the lock changes process only when a try of the waiting one falls in a gap.

use std::io;

use latchkey_bench::{Row, ROUNDS};

use super::child::{mono_ns, say, ChildLock, Kind, Proc, RETRY_SLEEP};
use super::{row, Target};

/// First argument of a hand-off child: `__redis-handoff-child URL LOCK ITERS ours|raw`.
pub const CHILD: &str = "__redis-handoff-child";

/// Acquire-and-release cycles of each of the two processes per round.
const ITERS: u64 = 50;

/// `__redis-handoff-child URL LOCK ITERS KIND`: opens the lock (a name of latchkey's, or a
/// raw key), takes it once (a warm-up), says `ready`, waits for `go` on stdin, runs ITERS
/// cycles, and says `done START END g1 r1 g2 r2 …` (grant and release-start times,
/// monotonic ns).
pub fn child(args: &[String]) {
    let [url, lock, iters, kind] = args else { panic!("usage: {CHILD} URL LOCK ITERS ours|raw") };
    let iters: usize = iters.parse().expect("ITERS is a number");
    let mut lock = ChildLock::open(Kind::parse(kind), url, lock);
    lock.cycle(|| {});
    say("ready");
    let mut go = String::new();
    io::stdin().read_line(&mut go).expect("cannot read from the parent");
    if go.trim() != "go" {
        return;
    }
    let mut times = Vec::with_capacity(2 * iters);
    let start = mono_ns();
    for _ in 0..iters {
        lock.cycle(|| {
            times.push(mono_ns());
            times.push(mono_ns());
        });
    }
    let end = mono_ns();
    let mut line = format!("done {start} {end}");
    for t in times {
        line.push_str(&format!(" {t}"));
    }
    say(&line);
}

/// One hand-off round, from the two children's records.
struct Round {
    /// ns from the first process's start to the last one's end.
    wall: f64,
    /// Grants, over both processes (2N).
    grants: usize,
    /// ns from one process's start of release to the other's grant, for each change of
    /// the holding process.
    latencies: Vec<f64>,
}

fn round(target: &Target, kind: Kind, round: usize) -> Round {
    // A name (or raw key) per round and kind.
    let lock = match kind {
        Kind::Ours => target.name(&format!("handoff/{round}")),
        Kind::Raw => target.raw_key(&format!("handoff/{round}")),
    };
    let iters = ITERS.to_string();
    let args = [CHILD, target.url.as_str(), lock.as_str(), iters.as_str(), kind.arg()];
    let mut procs = [Proc::spawn(&args), Proc::spawn(&args)];
    for proc in &mut procs {
        proc.expect("ready");
    }
    for proc in &mut procs {
        proc.tell("go");
    }
    // (grant, release start, process)
    let mut holds = Vec::with_capacity(2 * ITERS as usize);
    let (mut start, mut end) = (u64::MAX, 0);
    for (who, proc) in procs.iter_mut().enumerate() {
        let line = proc.line();
        let numbers: Vec<u64> = line
            .strip_prefix("done ")
            .unwrap_or_else(|| panic!("unexpected line from a hand-off child: {line:?}"))
            .split(' ')
            .map(|n| n.parse().expect("a number"))
            .collect();
        assert_eq!(numbers.len(), 2 + 2 * ITERS as usize, "a hand-off child's record is short");
        start = start.min(numbers[0]);
        end = end.max(numbers[1]);
        holds.extend(numbers[2..].chunks(2).map(|pair| (pair[0], pair[1], who)));
    }
    for mut proc in procs {
        assert!(proc.child.wait().expect("cannot wait for a child").success(), "a hand-off child failed");
    }
    holds.sort_unstable();
    let mut latencies = Vec::new();
    for pair in holds.windows(2) {
        let ((_, released, before), (granted, _, after)) = (pair[0], pair[1]);
        assert!(granted >= released, "{}: a process was granted the lock while the other held it", kind.arg());
        if before != after {
            latencies.push((granted - released) as f64);
        }
    }
    Round { wall: (end - start) as f64, grants: holds.len(), latencies }
}

/// What the rounds of one kind add up to.
struct Pooled {
    /// ns per grant: all the rounds' wall time / all their grants.
    per_grant: f64,
    /// ns per change of the holding process: wall time / changes.
    per_change: f64,
    /// The share of grants that went to the other process than the grant before.
    change_share: f64,
    /// The release-to-grant times of every change, sorted.
    latencies: Vec<f64>,
}

impl Pooled {
    fn of(rounds: &[Round]) -> Pooled {
        let wall: f64 = rounds.iter().map(|r| r.wall).sum();
        let grants: usize = rounds.iter().map(|r| r.grants).sum();
        let mut latencies: Vec<f64> = rounds.iter().flat_map(|r| r.latencies.iter().copied()).collect();
        latencies.sort_by(f64::total_cmp);
        let changes = latencies.len();
        Pooled {
            per_grant: wall / grants as f64,
            per_change: wall / changes.max(1) as f64,
            change_share: changes as f64 / (grants - rounds.len()).max(1) as f64,
            latencies,
        }
    }

    /// The `q` quantile of the release-to-grant times, ns.
    fn quantile(&self, q: f64) -> f64 {
        match self.latencies.len() {
            0 => f64::NAN,
            n => self.latencies[((n - 1) as f64 * q).round() as usize],
        }
    }

    /// The percentiles of the release-to-grant times, in ms.
    fn spread(&self) -> String {
        let ms = |q: f64| self.quantile(q) / 1e6;
        let slow = self.latencies.iter().filter(|&&ns| ns > 50e6).count();
        format!(
            "p10 {:.2} p50 {:.2} p90 {:.2} p99 {:.2} max {:.2} ms, {slow} of {} over 50 ms",
            ms(0.1),
            ms(0.5),
            ms(0.9),
            ms(0.99),
            ms(1.0),
            self.latencies.len()
        )
    }
}

/// `redis/handoff/2-processes*`: ours and the raw pair take turns, [`ROUNDS`] rounds after
/// a warm-up; the rounds are pooled (total time over total grants or changes), as the etcd
/// and postgres suites' are.
pub fn handoff(emit: &dyn Fn(Row), target: &Target) {
    let kinds = [Kind::Ours, Kind::Raw];
    for kind in kinds {
        round(target, kind, 0);
    }
    let mut rounds: [Vec<Round>; 2] = Default::default();
    for n in 1..=ROUNDS {
        for (kind, rounds) in kinds.into_iter().zip(&mut rounds) {
            rounds.push(round(target, kind, n));
        }
    }
    let [ours, raw] = rounds.map(|rounds| Pooled::of(&rounds));
    let peer = format!("SET NX PX, retried every {} ms", RETRY_SLEEP.as_millis());
    let case = "redis/handoff/2-processes";
    emit(row(case, ours.per_grant, &peer, raw.per_grant));
    emit(row(&format!("{case}/per-change"), ours.per_change, &peer, raw.per_change));
    emit(row(&format!("{case}/release-to-grant/p50"), ours.quantile(0.5), &peer, raw.quantile(0.5)));
    emit(row(&format!("{case}/release-to-grant/p90"), ours.quantile(0.9), &peer, raw.quantile(0.9)));
    eprintln!(
        "note: {case}: hand-offs/s: ours {:.0}, raw pair {:.0}; the lock changed process on {:.1}%, {:.1}% of grants",
        1e9 / ours.per_change,
        1e9 / raw.per_change,
        ours.change_share * 100.0,
        raw.change_share * 100.0
    );
    for (name, pooled) in [("ours", &ours), ("raw pair", &raw)] {
        eprintln!("note: {case}/release-to-grant, {name}: {}", pooled.spread());
    }
}
