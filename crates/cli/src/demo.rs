//! `latchkey demo`: worker processes (this binary, re-executed as `demo-worker`) contend
//! for named locks in a host scope, keep shared state in plain files under those locks,
//! and report what they did; the parent checks that the locks held and prints the figures.
//!
//! - mutex `demo/counter`: read a number from a file, add 1, write it back. The final
//!   number equals the sum of the increments only if no two increments overlapped.
//! - reader-writer lock `demo/table`: writers bump a version in a file in two writes
//!   (`dirty v`, then `clean v+1`); readers must never see anything but `clean v`, and the
//!   final version must equal the number of writes.
//! - semaphore `demo/gpu` of 2: holders count themselves in a file under the mutex
//!   `demo/gpu-count`; the count must never exceed 2.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::Args;
use latchkey::{Error, ErrorKind, Guard, Scope, ScopeUrl};
use serde::{Deserialize, Serialize};

use crate::duration::{self, show};

const COUNTER: &str = "demo/counter";
const TABLE: &str = "demo/table";
const GPU: &str = "demo/gpu";
const GPU_COUNT: &str = "demo/gpu-count";
const GPU_CAPACITY: u32 = 2;
/// How long a worker keeps a "GPU" busy.
const GPU_WORK: Duration = Duration::from_micros(200);
/// Time for the workers to start before the common start line.
const STARTUP: Duration = Duration::from_millis(300);

/// The arguments of `latchkey demo`.
#[derive(Args)]
pub struct DemoArgs {
    /// A scope shared by processes [default: `host:` on a fresh directory in the temp
    /// directory, removed at the end].
    #[arg(long, value_name = "URL")]
    scope: Option<String>,
    /// How many worker processes contend.
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=32))]
    workers: u32,
    /// How long they contend: 500ms, 2s, 1m, or seconds.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = duration::parse)]
    seconds: Duration,
}

/// The arguments of the hidden `latchkey demo-worker`.
#[derive(Args)]
pub struct WorkerArgs {
    #[arg(long)]
    scope: String,
    /// The directory of the shared files.
    #[arg(long)]
    dir: PathBuf,
    #[arg(long)]
    id: u32,
    /// When to start, in nanoseconds since the Unix epoch.
    #[arg(long)]
    start_ns: u64,
    /// When to stop, in nanoseconds since the Unix epoch.
    #[arg(long)]
    end_ns: u64,
}

/// The figures of one lock in one worker.
#[derive(Clone, Copy, Default, Serialize, Deserialize)]
struct LockStats {
    acquisitions: u64,
    wait_ns: u64,
    wait_max_ns: u64,
    hold_ns: u64,
    hold_max_ns: u64,
}

impl LockStats {
    fn add(&mut self, other: &LockStats) {
        self.acquisitions += other.acquisitions;
        self.wait_ns += other.wait_ns;
        self.wait_max_ns = self.wait_max_ns.max(other.wait_max_ns);
        self.hold_ns += other.hold_ns;
        self.hold_max_ns = self.hold_max_ns.max(other.hold_max_ns);
    }
}

/// What a worker prints, as one JSON line, when it is done.
#[derive(Default, Serialize, Deserialize)]
struct Report {
    id: u32,
    pid: u32,
    counter: LockStats,
    table_read: LockStats,
    table_write: LockStats,
    gpu: LockStats,
    gpu_count: LockStats,
    /// Increments of the counter file.
    increments: u64,
    /// Versions the worker wrote to the table file.
    table_writes: u64,
    /// Reads of the table file that found a write in progress (must be 0).
    torn_reads: u64,
    /// The most readers of `demo/table` seen at once.
    readers_peak: u32,
    /// The most holders of `demo/gpu` counted at once (must be at most 2).
    gpu_peak: i64,
}

/// The shared files, in the demo directory.
struct Files {
    counter: PathBuf,
    table: PathBuf,
    gpu_holders: PathBuf,
}

impl Files {
    fn new(dir: &Path) -> Files {
        Files { counter: dir.join("counter"), table: dir.join("table"), gpu_holders: dir.join("gpu-holders") }
    }
}

fn read_number(path: &Path) -> anyhow::Result<i64> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.trim().parse().with_context(|| format!("{} holds {text:?}, not a number", path.display()))
}

fn write_number(path: &Path, value: i64) -> anyhow::Result<()> {
    fs::write(path, format!("{value}\n")).with_context(|| format!("writing {}", path.display()))
}

/// The version in the table file if no write is in progress.
fn clean_version(text: &str) -> Option<u64> {
    text.strip_prefix("clean ")?.trim_end().parse().ok()
}

/// A guard and when it was granted, with its wait counted in `stats`.
fn timed<'a>(
    stats: &mut LockStats,
    take: impl FnOnce() -> latchkey::Result<Guard<'a>>,
) -> latchkey::Result<(Guard<'a>, Instant)> {
    let asked = Instant::now();
    let guard = take()?;
    let granted = Instant::now();
    let wait = (granted - asked).as_nanos() as u64;
    stats.acquisitions += 1;
    stats.wait_ns += wait;
    stats.wait_max_ns = stats.wait_max_ns.max(wait);
    Ok((guard, granted))
}

/// Releases `guard`, counting how long it was held.
fn release(stats: &mut LockStats, guard: Guard<'_>, granted: Instant) -> latchkey::Result<()> {
    let hold = granted.elapsed().as_nanos() as u64;
    stats.hold_ns += hold;
    stats.hold_max_ns = stats.hold_max_ns.max(hold);
    guard.release()
}

fn unix_ns(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// The `Instant` of a wall-clock time given in nanoseconds since the Unix epoch.
fn instant_at(ns: u64) -> Instant {
    let (now, wall) = (Instant::now(), unix_ns(SystemTime::now()));
    if ns >= wall {
        now + Duration::from_nanos(ns - wall)
    } else {
        now.checked_sub(Duration::from_nanos(wall - ns)).unwrap_or(now)
    }
}

/// xorshift64*: enough to mix the operations, seeded per worker.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// One worker: contends until the deadline, then prints its report as one JSON line.
pub fn worker(args: WorkerArgs) -> anyhow::Result<u8> {
    let scope = Scope::open(&args.scope)?;
    let counter = scope.mutex(COUNTER)?;
    let table = scope.rwlock(TABLE)?;
    let gpu = scope.semaphore(GPU, GPU_CAPACITY)?;
    let gpu_count = scope.mutex(GPU_COUNT)?;
    let files = Files::new(&args.dir);
    let mut report = Report { id: args.id, pid: std::process::id(), ..Report::default() };
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (u64::from(report.pid) << 16) ^ u64::from(args.id) | 1);

    let (start, end) = (instant_at(args.start_ns), instant_at(args.end_ns));
    std::thread::sleep(start.saturating_duration_since(Instant::now()));
    while Instant::now() < end {
        match rng.next() % 10 {
            // The counter: a read-modify-write of a file, kept whole by the mutex alone.
            0..=3 => {
                let (guard, granted) = timed(&mut report.counter, || counter.lock_blocking())?;
                let value = read_number(&files.counter)?;
                write_number(&files.counter, value + 1)?;
                release(&mut report.counter, guard, granted)?;
                report.increments += 1;
            }
            // The table: one write in five.
            4..=7 if rng.next() % 5 == 0 => {
                let (guard, granted) = timed(&mut report.table_write, || table.write_blocking())?;
                let text = fs::read_to_string(&files.table)?;
                let Some(version) = clean_version(&text) else {
                    bail!("a writer of {TABLE} found {text:?}: another write was in progress");
                };
                fs::write(&files.table, format!("dirty {version}\n"))?;
                fs::write(&files.table, format!("clean {}\n", version + 1))?;
                release(&mut report.table_write, guard, granted)?;
                report.table_writes += 1;
            }
            4..=7 => {
                let (guard, granted) = timed(&mut report.table_read, || table.read_blocking())?;
                let text = fs::read_to_string(&files.table)?;
                if clean_version(&text).is_none() {
                    report.torn_reads += 1;
                }
                report.readers_peak = report.readers_peak.max(table.readers()?);
                release(&mut report.table_read, guard, granted)?;
            }
            // The "GPUs": hold one of two for a while, counting holders under another mutex.
            _ => {
                let (guard, granted) = timed(&mut report.gpu, || gpu.acquire_blocking(1))?;
                let holders = count_gpu_holder(&gpu_count, &files, &mut report.gpu_count, 1)?;
                report.gpu_peak = report.gpu_peak.max(holders);
                std::thread::sleep(GPU_WORK);
                count_gpu_holder(&gpu_count, &files, &mut report.gpu_count, -1)?;
                release(&mut report.gpu, guard, granted)?;
            }
        }
    }
    println!("{}", serde_json::to_string(&report)?);
    Ok(0)
}

/// Adds `delta` to the count of "GPU" holders under the mutex `demo/gpu-count`; returns
/// the new count.
fn count_gpu_holder(mutex: &latchkey::Mutex, files: &Files, stats: &mut LockStats, delta: i64) -> anyhow::Result<i64> {
    let (guard, granted) = timed(stats, || mutex.lock_blocking())?;
    let holders = read_number(&files.gpu_holders)? + delta;
    write_number(&files.gpu_holders, holders)?;
    release(stats, guard, granted)?;
    Ok(holders)
}

/// Removes the demo directory when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The demo: starts the workers, gathers their reports, checks the invariants, prints.
pub fn demo(args: DemoArgs) -> anyhow::Result<u8> {
    let dir = TempDir(std::env::temp_dir().join(format!("latchkey-demo-{}", std::process::id())));
    let _ = fs::remove_dir_all(&dir.0); // left behind by an earlier process of the same pid
    fs::DirBuilder::new().mode(0o700).create(&dir.0).with_context(|| format!("creating {}", dir.0.display()))?;
    let url = args.scope.clone().unwrap_or_else(|| format!("host:{}", dir.0.display()));
    if ScopeUrl::parse(&url)? == ScopeUrl::Process {
        return Err(Error::new(
            ErrorKind::Unsupported,
            "the demo's workers are processes, and process: only excludes the threads of one process: use host: or host:/dir",
        )
        .with_scope(url)
        .into());
    }
    let scope = Scope::open(&url)?;
    // Opened here first, so that a name in use with another capacity fails before any worker starts.
    let _locks =
        (scope.mutex(COUNTER)?, scope.rwlock(TABLE)?, scope.semaphore(GPU, GPU_CAPACITY)?, scope.mutex(GPU_COUNT)?);
    let files = Files::new(&dir.0);
    write_number(&files.counter, 0)?;
    write_number(&files.gpu_holders, 0)?;
    fs::write(&files.table, "clean 0\n")?;

    let start = SystemTime::now() + STARTUP;
    let end = start + args.seconds;
    println!(
        "latchkey demo: {} worker processes contend for {} in scope {}\n",
        args.workers,
        show(args.seconds),
        scope.url()
    );
    let exe = std::env::current_exe().context("finding this program to start the workers")?;
    let workers = (0..args.workers)
        .map(|id| {
            Command::new(&exe)
                .arg("demo-worker")
                .args(["--scope", &url, "--id", &id.to_string()])
                .arg("--dir")
                .arg(&dir.0)
                .args(["--start-ns", &unix_ns(start).to_string(), "--end-ns", &unix_ns(end).to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .spawn()
                .context("starting a worker")
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut reports = Vec::new();
    let mut failed = 0;
    for worker in workers {
        let output = worker.wait_with_output()?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        match stdout.lines().last().map(serde_json::from_str::<Report>) {
            Some(Ok(report)) if output.status.success() => reports.push(report),
            _ => failed += 1,
        }
    }

    let summary = Summary {
        workers: args.workers,
        seconds: args.seconds.as_secs_f64(),
        counter: read_number(&files.counter)?,
        table: fs::read_to_string(&files.table)?,
        gpu_holders_left: read_number(&files.gpu_holders)?,
        failed,
        reports,
    };
    print!("{}", summary.render());
    Ok(if summary.all_held() { 0 } else { 1 })
}

/// Picks one lock's figures out of a report.
type Pick = fn(&Report) -> LockStats;

/// Everything the demo found.
struct Summary {
    workers: u32,
    seconds: f64,
    /// The counter file at the end.
    counter: i64,
    /// The table file at the end.
    table: String,
    gpu_holders_left: i64,
    /// Workers that failed or sent no report.
    failed: u32,
    reports: Vec<Report>,
}

impl Summary {
    fn sum(&self, f: impl Fn(&Report) -> u64) -> u64 {
        self.reports.iter().map(f).sum()
    }

    /// The verdicts: (held, what was checked).
    fn verdicts(&self) -> Vec<(bool, String)> {
        let increments = self.sum(|r| r.increments);
        let writes = self.sum(|r| r.table_writes);
        let torn = self.sum(|r| r.torn_reads);
        let readers = self.reports.iter().map(|r| r.readers_peak).max().unwrap_or(0);
        let peak = self.reports.iter().map(|r| r.gpu_peak).max().unwrap_or(0);
        let version = clean_version(&self.table);
        vec![
            (
                self.counter == increments as i64,
                format!(
                    "mutex {COUNTER}: the counter file reads {}, the workers made {increments} increments",
                    self.counter
                ),
            ),
            (
                torn == 0 && version == Some(writes),
                format!(
                    "rwlock {TABLE}: {torn} reads saw a write in progress (up to {readers} readers at once); \
                     version {} after {writes} writes",
                    version.map_or_else(|| format!("{:?}", self.table.trim_end()), |v| v.to_string())
                ),
            ),
            (
                peak <= i64::from(GPU_CAPACITY) && self.gpu_holders_left == 0,
                format!("semaphore {GPU}: at most {peak} holders at once (capacity {GPU_CAPACITY})"),
            ),
            (self.failed == 0, format!("workers: {} of {} reported", self.reports.len(), self.workers)),
        ]
    }

    fn all_held(&self) -> bool {
        self.verdicts().iter().all(|(held, _)| *held)
    }

    fn render(&self) -> String {
        let mut out = String::new();
        let locks: [(&str, &str, Pick); 5] = [
            (COUNTER, "mutex", |r| r.counter),
            ("demo/table (read)", "rwlock", |r| r.table_read),
            ("demo/table (write)", "rwlock", |r| r.table_write),
            (GPU, "semaphore(2)", |r| r.gpu),
            (GPU_COUNT, "mutex", |r| r.gpu_count),
        ];
        let mut rows = vec![[
            "lock",
            "kind",
            "acquired",
            "per second",
            "fairness",
            "wait mean",
            "wait max",
            "hold mean",
            "hold max",
        ]
        .map(String::from)
        .to_vec()];
        for (name, kind, get) in locks {
            let mut total = LockStats::default();
            self.reports.iter().for_each(|r| total.add(&get(r)));
            let counts: Vec<u64> = self.reports.iter().map(|r| get(r).acquisitions).collect();
            let (min, max) = (counts.iter().min().copied().unwrap_or(0), counts.iter().max().copied().unwrap_or(0));
            let mean = |ns: u64| show(Duration::from_nanos(ns.checked_div(total.acquisitions).unwrap_or(0)));
            rows.push(vec![
                name.to_string(),
                kind.to_string(),
                total.acquisitions.to_string(),
                format!("{:.0}", total.acquisitions as f64 / self.seconds),
                if max == 0 { "-".to_string() } else { format!("{:.2}", min as f64 / max as f64) },
                mean(total.wait_ns),
                show(Duration::from_nanos(total.wait_max_ns)),
                mean(total.hold_ns),
                show(Duration::from_nanos(total.hold_max_ns)),
            ]);
        }
        out.push_str(&columns(&rows, 2));
        out.push_str("(fairness: the fewest acquisitions of a worker over the most)\n\n");

        let mut rows = vec![["worker", "pid", "counter", "table reads", "table writes", "gpu", "gpu-count"]
            .map(String::from)
            .to_vec()];
        for r in &self.reports {
            rows.push(vec![
                r.id.to_string(),
                r.pid.to_string(),
                r.counter.acquisitions.to_string(),
                r.table_read.acquisitions.to_string(),
                r.table_write.acquisitions.to_string(),
                r.gpu.acquisitions.to_string(),
                r.gpu_count.acquisitions.to_string(),
            ]);
        }
        out.push_str(&columns(&rows, 2));

        out.push_str("\nverdicts:\n");
        let verdicts = self.verdicts();
        for (held, what) in &verdicts {
            out.push_str(&format!("  {}  {what}\n", if *held { "ok    " } else { "FAILED" }));
        }
        out.push_str(if verdicts.iter().all(|(held, _)| *held) {
            "all invariants held\n"
        } else {
            "some invariants did not hold\n"
        });
        out
    }
}

/// Lines up `rows` in columns: text to the left, numbers to the right.
fn columns(rows: &[Vec<String>], gap: usize) -> String {
    let widths: Vec<usize> =
        (0..rows[0].len()).map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
    let numeric = |c: usize| rows[1..].iter().all(|r| r[c].starts_with(|ch: char| ch.is_ascii_digit() || ch == '-'));
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, cell)| {
                let w = widths[c];
                if numeric(c) {
                    format!("{cell:>w$}")
                } else {
                    format!("{cell:<w$}")
                }
            })
            .collect();
        out.push_str(cells.join(&" ".repeat(gap)).trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(id: u32, increments: u64, writes: u64, gpu_peak: i64) -> Report {
        let stats =
            LockStats { acquisitions: increments, wait_ns: 1000, wait_max_ns: 900, hold_ns: 500, hold_max_ns: 400 };
        Report { id, pid: 100 + id, counter: stats, increments, table_writes: writes, gpu_peak, ..Report::default() }
    }

    fn summary(counter: i64, table: &str, reports: Vec<Report>) -> Summary {
        Summary { workers: 2, seconds: 1.0, counter, table: table.into(), gpu_holders_left: 0, failed: 0, reports }
    }

    #[test]
    fn verdicts_hold_when_the_files_add_up() {
        let s = summary(30, "clean 5\n", vec![report(0, 10, 2, 2), report(1, 20, 3, 1)]);
        assert!(s.all_held(), "{}", s.render());
        let text = s.render();
        assert!(text.contains("all invariants held"), "{text}");
        assert!(text.contains("the counter file reads 30, the workers made 30 increments"), "{text}");
        assert!(text.contains("0.50"), "fairness 10/20: {text}");
    }

    #[test]
    fn verdicts_fail_on_a_lost_update_a_torn_table_or_a_third_gpu() {
        let lost = summary(29, "clean 5\n", vec![report(0, 10, 2, 2), report(1, 20, 3, 1)]);
        assert!(!lost.all_held());
        assert!(lost.render().contains("FAILED"));
        assert!(!summary(30, "dirty 4\n", vec![report(0, 10, 2, 2), report(1, 20, 3, 1)]).all_held());
        assert!(!summary(30, "clean 5\n", vec![report(0, 10, 2, 3), report(1, 20, 3, 1)]).all_held());
        let mut missing = summary(10, "clean 2\n", vec![report(0, 10, 2, 1)]);
        missing.failed = 1;
        assert!(!missing.all_held());
    }

    #[test]
    fn table_versions_parse() {
        assert_eq!(clean_version("clean 12\n"), Some(12));
        assert_eq!(clean_version("dirty 12\n"), None);
        assert_eq!(clean_version(""), None);
    }
}
