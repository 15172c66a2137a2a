//! The cases of the `etcd` suite that run child processes (this binary again, started with
//! a hidden first argument that `main` hands to [`child_main`]):
//!
//! - `etcd/handoff/2-processes`: two children take the same lock in turn, each
//!   [`HANDOFF_ITERS`] times { acquire; release }, started together: latchkey's mutex,
//!   etcd's Lock RPC, or the [`Floor`] (latchkey's queue on the raw client, with a watch
//!   that never falls behind). Each records, on the monotonic clock (the same for every
//!   process of the machine), when it was granted and when it began to release; the parent
//!   merges the two records, checks that no grant came before the other process began its
//!   release, and counts the changes of holder. All three locks are FIFO, so a process that
//!   releases finds the other queued and queues behind it: nearly every grant is a
//!   hand-off between the processes.
//! - `etcd/kill-to-grant`: a child holds the lock on a session (lease) of [`CRASH_TTL`],
//!   a thread of the parent waits for it, the child is killed with SIGKILL; the time from
//!   just before `kill(2)` to the waiter's grant. Nothing tells etcd that the child died:
//!   its lease expires at most a TTL after its last keep-alive (one every third of the
//!   TTL), and etcd's lessor looks for expired leases every 500 ms.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use etcd_client::LockOptions;
use latchkey::Scope;
use latchkey_bench::{Row, ROUNDS};
use latchkey_etcd::Config;

use super::floor::Floor;
use super::{bounded, row, Raw, Target, LOCK_RPC, RAW_LEASE_TTL};

/// First argument of a hand-off child: `__etcd-handoff-child URL NAME ITERS ours|rpc|floor`.
pub const HANDOFF_CHILD: &str = "__etcd-handoff-child";
/// First argument of a crash child: `__etcd-crash-child URL NAME ours|rpc` (the URL has
/// the session's TTL).
pub const CRASH_CHILD: &str = "__etcd-crash-child";

/// Acquire-and-release cycles of each of the two processes per hand-off round.
const HANDOFF_ITERS: u64 = 20;
/// The session TTL of the crash child (ours: `?ttl=`; the Lock RPC: its lease's TTL).
const CRASH_TTL: Duration = Duration::from_secs(2);
/// Kills per crash case, ours and the Lock RPC alternating.
const KILLS: u32 = 3;
/// How long the waiting thread is given to queue its request before the holder is killed.
const WAITER_SETTLE: Duration = Duration::from_millis(150);
/// The TTL of a hand-off child's Lock RPC lease: longer than a round, never kept alive.
const CHILD_LEASE_TTL: i64 = 60;

const TTL_PEER: &str = "the session TTL";
const FLOOR: &str = "raw FIFO, watch kept from before (floor)";

/// Which lock a child process takes.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Ours,
    Rpc,
    Floor,
}

impl Kind {
    fn arg(self) -> &'static str {
        match self {
            Kind::Ours => "ours",
            Kind::Rpc => "rpc",
            Kind::Floor => "floor",
        }
    }

    fn parse(arg: &str) -> Kind {
        match arg {
            "ours" => Kind::Ours,
            "rpc" => Kind::Rpc,
            "floor" => Kind::Floor,
            other => panic!("unknown lock kind {other:?}"),
        }
    }
}

/// Runs a child role if `args` (the arguments after the program name) name one.
/// Returns `false` when they do not.
pub fn child_main(args: &[String]) -> bool {
    match args.first().map(String::as_str) {
        Some(HANDOFF_CHILD) => handoff_child(&args[1..]),
        Some(CRASH_CHILD) => crash_child(&args[1..]),
        _ => return false,
    }
    true
}

/// CLOCK_MONOTONIC in ns: comparable between the processes of one machine.
fn mono_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a plain system call that fills `ts`.
    assert_eq!(unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) }, 0);
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn say(line: &str) {
    let mut stdout = io::stdout().lock();
    writeln!(stdout, "{line}").and_then(|()| stdout.flush()).expect("cannot write to the parent");
}

/// The lock of one child process: a mutex of latchkey's etcd scope, etcd's Lock RPC on a
/// lease of its own, or the [`Floor`] on a lease of its own.
enum ChildLock {
    Ours { _scope: Scope, mutex: latchkey::Mutex },
    Rpc { raw: Box<Raw>, name: String },
    Floor(Box<Floor>),
}

impl ChildLock {
    /// For the Lock RPC and the floor, a lease of `ttl` seconds.
    fn open(kind: Kind, url: &str, name: &str, ttl: i64) -> ChildLock {
        match kind {
            Kind::Ours => {
                let scope = Scope::open(url).expect("cannot open the etcd scope");
                let mutex = scope.mutex(name).expect("cannot open the mutex");
                ChildLock::Ours { _scope: scope, mutex }
            }
            Kind::Rpc | Kind::Floor => {
                let config = Config::parse(url).expect("a bad etcd URL").with_environment();
                let raw = Raw::with_lease(&config, ttl);
                match kind {
                    Kind::Rpc => ChildLock::Rpc { raw: Box::new(raw), name: name.to_string() },
                    _ => ChildLock::Floor(Box::new(Floor::new(raw, name))),
                }
            }
        }
    }

    /// Takes the lock, calls `held`, releases it.
    fn cycle(&mut self, held: impl FnOnce()) {
        match self {
            ChildLock::Ours { mutex, .. } => {
                let guard = mutex.lock_blocking().expect("cannot take the lock");
                held();
                guard.release().expect("cannot release the lock");
            }
            ChildLock::Rpc { raw, name } => {
                let key = raw.lock(name);
                held();
                raw.unlock(key);
            }
            ChildLock::Floor(floor) => {
                let key = floor.lock();
                held();
                floor.unlock(key);
            }
        }
    }
}

/// `__etcd-handoff-child URL NAME ITERS KIND`: opens the lock, takes it once (a warm-up),
/// says `ready`, waits for `go` on stdin, runs ITERS cycles, and says
/// `done START END g1 r1 g2 r2 …` (grant and release-start times, monotonic ns).
fn handoff_child(args: &[String]) {
    let [url, name, iters, kind] = args else { panic!("usage: {HANDOFF_CHILD} URL NAME ITERS ours|rpc|floor") };
    let iters: usize = iters.parse().expect("ITERS is a number");
    let mut lock = ChildLock::open(Kind::parse(kind), url, name, CHILD_LEASE_TTL);
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

/// A child process of this binary, killed and reaped on drop.
struct Proc {
    child: Child,
    stdin: Option<ChildStdin>,
    out: BufReader<ChildStdout>,
}

impl Proc {
    fn spawn(args: &[&str]) -> Proc {
        let exe = std::env::current_exe().expect("cannot find the compare binary");
        let mut child = Command::new(exe)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("cannot start a child process");
        let stdin = child.stdin.take();
        let out = BufReader::new(child.stdout.take().expect("piped"));
        Proc { child, stdin, out }
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.out.read_line(&mut line).expect("cannot read from the child process");
        assert!(!line.is_empty(), "the child process ended early");
        line.trim_end().to_string()
    }

    fn expect(&mut self, expected: &str) {
        let line = self.line();
        assert_eq!(line, expected, "unexpected line from the child process");
    }

    fn tell(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin is open");
        writeln!(stdin, "{line}").and_then(|()| stdin.flush()).expect("cannot write to the child process");
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One hand-off round, from the two children's records.
struct Handoff {
    /// ns from the first process's start to the last one's end.
    wall: f64,
    /// Grants, over both processes (2N).
    grants: usize,
    /// ns from one process's start of release to the other's grant, for each change of
    /// the holding process.
    latencies: Vec<f64>,
}

fn handoff_round(target: &Target, kind: Kind, round: usize) -> Handoff {
    // A name per round: see `uncontended` on what old requests cost.
    let name = match kind {
        Kind::Ours => target.name(&format!("handoff/{round}")),
        Kind::Rpc => target.raw_key(&format!("handoff-rpc/{round}")),
        Kind::Floor => target.raw_key(&format!("handoff-floor/{round}")),
    };
    let iters = HANDOFF_ITERS.to_string();
    let args = [HANDOFF_CHILD, target.url.as_str(), name.as_str(), iters.as_str(), kind.arg()];
    let mut procs = [Proc::spawn(&args), Proc::spawn(&args)];
    for proc in &mut procs {
        proc.expect("ready");
    }
    for proc in &mut procs {
        proc.tell("go");
    }
    // (grant, release start, process)
    let mut holds = Vec::with_capacity(2 * HANDOFF_ITERS as usize);
    let (mut start, mut end) = (u64::MAX, 0);
    for (who, proc) in procs.iter_mut().enumerate() {
        let line = proc.line();
        let numbers: Vec<u64> = line
            .strip_prefix("done ")
            .unwrap_or_else(|| panic!("unexpected line from a hand-off child: {line:?}"))
            .split(' ')
            .map(|n| n.parse().expect("a number"))
            .collect();
        start = start.min(numbers[0]);
        end = end.max(numbers[1]);
        assert_eq!(numbers.len(), 2 + 2 * HANDOFF_ITERS as usize, "a hand-off child's record is short");
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
    Handoff { wall: (end - start) as f64, grants: holds.len(), latencies }
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
    fn of(rounds: &[Handoff]) -> Pooled {
        let wall: f64 = rounds.iter().map(|h| h.wall).sum();
        let grants: usize = rounds.iter().map(|h| h.grants).sum();
        let mut latencies: Vec<f64> = rounds.iter().flat_map(|h| h.latencies.iter().copied()).collect();
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

/// `etcd/handoff/2-processes*`: ours, the Lock RPC and the floor take turns, [`ROUNDS`]
/// rounds after a warm-up. A hand-off takes either about a millisecond or about 100 ms
/// (see [`Floor`]), so a round's figure depends on how many slow ones it drew: the rounds
/// are pooled (total time over total grants or changes) rather than reduced to a median.
pub fn handoff(emit: &dyn Fn(Row), target: &Target) {
    let kinds = [Kind::Ours, Kind::Rpc, Kind::Floor];
    for kind in kinds {
        handoff_round(target, kind, 0);
    }
    let mut rounds: [Vec<Handoff>; 3] = Default::default();
    for round in 1..=ROUNDS {
        for (kind, rounds) in kinds.into_iter().zip(&mut rounds) {
            rounds.push(handoff_round(target, kind, round));
        }
    }
    let [ours, rpc, floor] = rounds.map(|rounds| Pooled::of(&rounds));
    let case = "etcd/handoff/2-processes";
    for (peer_name, peer) in [(LOCK_RPC, &rpc), (FLOOR, &floor)] {
        emit(row(case, ours.per_grant, peer_name, peer.per_grant));
        emit(row(&format!("{case}/per-change"), ours.per_change, peer_name, peer.per_change));
        emit(row(&format!("{case}/release-to-grant/p50"), ours.quantile(0.5), peer_name, peer.quantile(0.5)));
        emit(row(&format!("{case}/release-to-grant/p90"), ours.quantile(0.9), peer_name, peer.quantile(0.9)));
    }
    eprintln!(
        "note: {case}: hand-offs/s: ours {:.0}, Lock RPC {:.0}, floor {:.0}; the lock changed process on \
         {:.1}%, {:.1}%, {:.1}% of grants",
        1e9 / ours.per_change,
        1e9 / rpc.per_change,
        1e9 / floor.per_change,
        ours.change_share * 100.0,
        rpc.change_share * 100.0,
        floor.change_share * 100.0
    );
    for (name, pooled) in [("ours", &ours), ("Lock RPC", &rpc), ("floor", &floor)] {
        eprintln!("note: {case}/release-to-grant, {name}: {}", pooled.spread());
    }
}

/// `__etcd-crash-child URL NAME KIND`: takes the lock on a session of the URL's TTL, says
/// `held`, and keeps the session alive until killed (or until its stdin closes).
fn crash_child(args: &[String]) {
    let [url, name, kind] = args else { panic!("usage: {CRASH_CHILD} URL NAME ours|rpc") };
    // Should the parent go away, so does this process.
    std::thread::spawn(|| {
        let _ = io::stdin().read_to_end(&mut Vec::new());
        std::process::exit(0);
    });
    let ttl = Config::parse(url).expect("a bad etcd URL").ttl;
    let mut lock = ChildLock::open(Kind::parse(kind), url, name, ttl.as_secs() as i64);
    match &mut lock {
        ChildLock::Ours { mutex, .. } => {
            // The scope's own thread keeps the session alive.
            let _guard = mutex.lock_blocking().expect("cannot take the lock");
            say("held");
            loop {
                std::thread::park();
            }
        }
        ChildLock::Rpc { raw, name } => {
            let _key = raw.lock(name);
            say("held");
            raw.keep_alive(ttl / 3);
        }
        ChildLock::Floor(_) => panic!("the crash case has no floor"),
    }
}

/// Kill number `kill`: the time from just before `kill(2)` of a child that holds the lock
/// to the grant of the parent's waiter. The waiter is given [`WAITER_SETTLE`] to queue,
/// plus `kill` [`KILLS`]ths of the child's keep-alive period (a third of the TTL), so that
/// the kills fall at different moments of that period.
fn crash_round(target: &Target, kind: Kind, kill: u32, scope: &Scope, raw: &mut Raw) -> f64 {
    let name = match kind {
        Kind::Ours => target.name(&format!("crash/{kill}")),
        _ => target.raw_key(&format!("crash-rpc/{kill}")),
    };
    let settle = WAITER_SETTLE + CRASH_TTL / 3 / KILLS * kill;
    let url = target.url_with_ttl(CRASH_TTL);
    let mut proc = Proc::spawn(&[CRASH_CHILD, &url, &name, kind.arg()]);
    proc.expect("held");
    let (granted_tx, granted_rx) = mpsc::channel();
    let latency = std::thread::scope(|s| {
        let name = &name;
        s.spawn(move || match kind {
            Kind::Ours => {
                let guard = scope.lock_blocking(name).expect("the waiter failed");
                granted_tx.send(Instant::now()).expect("the parent is gone");
                guard.release().expect("cannot release the lock");
            }
            _ => {
                let key = raw.lock(name);
                granted_tx.send(Instant::now()).expect("the parent is gone");
                raw.unlock(key);
            }
        });
        std::thread::sleep(settle);
        assert!(granted_rx.try_recv().is_err(), "the waiter got the lock while the child held it");
        let pid = proc.child.id() as libc::pid_t;
        let killed = Instant::now();
        // SAFETY: a plain system call; the child has not been waited for, so `pid` is its.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0, "kill failed");
        let granted =
            granted_rx.recv_timeout(Duration::from_secs(20)).expect("the lock of the killed child was not granted");
        granted.duration_since(killed)
    });
    drop(proc);
    latency.as_nanos() as f64
}

/// `etcd/kill-to-grant*`: [`KILLS`] kills each, ours and the Lock RPC alternating.
pub fn kill_to_grant(emit: &dyn Fn(Row), target: &Target) {
    let scope = Scope::open(&target.url).expect("cannot open the etcd scope");
    let mut raw = Raw::with_lease(&target.config, RAW_LEASE_TTL);
    let (mut ours, mut peer) = (Vec::new(), Vec::new());
    for kill in 0..KILLS {
        ours.push(crash_round(target, Kind::Ours, kill, &scope, &mut raw));
        peer.push(crash_round(target, Kind::Rpc, kill, &scope, &mut raw));
    }
    let seconds = |v: &[f64]| v.iter().map(|ns| format!("{:.2}", ns / 1e9)).collect::<Vec<_>>().join(", ");
    eprintln!("note: etcd/kill-to-grant, each kill in s: ours {}; Lock RPC {}", seconds(&ours), seconds(&peer));
    let max = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    let (ours_max, peer_max) = (max(&ours), max(&peer));
    let ttl = CRASH_TTL.as_nanos() as f64;
    let (o, p) = (median(ours), median(peer));
    let ttl_s = CRASH_TTL.as_secs();
    emit(row("etcd/kill-to-grant", o, &format!("{LOCK_RPC}, lease TTL {ttl_s} s"), p));
    emit(row("etcd/kill-to-grant", o, &format!("{TTL_PEER} ({ttl_s} s)"), ttl));
    emit(row("etcd/kill-to-grant/max", ours_max, &format!("{LOCK_RPC}, lease TTL {ttl_s} s"), peer_max));
    drop(raw);
    scope.close_blocking().expect("cannot close the etcd scope");
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

impl Raw {
    /// Lock RPC on `name` with the lease: the key that holds it.
    fn lock(&mut self, name: &str) -> Vec<u8> {
        let (client, lease) = (&mut self.client, self.lease);
        self.rt.block_on(async {
            // A Lock that waits has no deadline: the caller bounds the whole wait.
            let options = Some(LockOptions::new().with_lease(lease));
            match client.lock(name, options).await {
                Ok(locked) => locked.key().to_vec(),
                Err(e) => panic!("etcd lock failed: {e}"),
            }
        })
    }

    fn unlock(&mut self, key: Vec<u8>) {
        let client = &mut self.client;
        self.rt.block_on(bounded("unlock", client.unlock(key)));
    }

    /// Keeps the lease alive, one keep-alive every `interval`, forever.
    fn keep_alive(&mut self, interval: Duration) -> ! {
        let (client, lease) = (&mut self.client, self.lease);
        self.rt.block_on(async {
            let (mut keeper, mut answers) = bounded("keep-alive", client.lease_keep_alive(lease)).await;
            loop {
                let next = tokio::time::Instant::now() + interval;
                keeper.keep_alive().await.expect("cannot send a keep-alive");
                bounded("keep-alive answer", answers.message()).await.expect("the keep-alive stream ended");
                tokio::time::sleep_until(next).await;
            }
        })
    }
}
