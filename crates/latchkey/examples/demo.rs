//! A first look at latchkey in the process scope: worker threads and async tasks
//! contend for named locks; the demo checks that the locks held and prints what it
//! measured.
//!
//! Run with `cargo run --release -p latchkey --example demo`.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use latchkey::Scope;

const WORKERS: usize = 4;
const RUN_FOR: Duration = Duration::from_millis(500);

/// A counter with no synchronization of its own: only the lock keeps it right.
struct Ledger(UnsafeCell<u64>);
// SAFETY: it is only touched while holding the mutex "demo/ledger".
unsafe impl Sync for Ledger {}

fn main() -> latchkey::Result<()> {
    let scope = Scope::open("process:")?;
    println!("latchkey demo: {WORKERS} threads and {WORKERS} tasks contend in scope {}\n", scope.url());

    let ledger = Arc::new(Ledger(UnsafeCell::new(0)));
    let gpu_holders = Arc::new(AtomicUsize::new(0));
    let gpu_peak = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();

    // Threads: the blocking API, no runtime.
    let threads: Vec<_> = (0..WORKERS)
        .map(|_| {
            let (scope, ledger) = (scope.clone(), ledger.clone());
            std::thread::spawn(move || -> latchkey::Result<(u64, Duration)> {
                let mutex = scope.mutex("demo/ledger")?;
                let (mut count, mut longest_wait) = (0, Duration::ZERO);
                while start.elapsed() < RUN_FOR {
                    let asked = Instant::now();
                    let guard = mutex.lock_blocking()?;
                    longest_wait = longest_wait.max(asked.elapsed());
                    // SAFETY: we hold "demo/ledger".
                    unsafe { *ledger.0.get() += 1 };
                    count += 1;
                    guard.release()?;
                }
                Ok((count, longest_wait))
            })
        })
        .collect();

    // Tasks: the async API, sharing a semaphore of 2 "GPUs" and the same ledger.
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_time().build().unwrap();
    let task_counts: Vec<u64> = runtime.block_on(async {
        let tasks: Vec<_> = (0..WORKERS)
            .map(|_| {
                let (scope, ledger) = (scope.clone(), ledger.clone());
                let (holders, peak) = (gpu_holders.clone(), gpu_peak.clone());
                tokio::spawn(async move {
                    let gpus = scope.semaphore("demo/gpu", 2)?;
                    let mutex = scope.mutex("demo/ledger")?;
                    let mut count = 0u64;
                    while start.elapsed() < RUN_FOR {
                        let gpu = gpus.acquire(1).await?;
                        let now = holders.fetch_add(1, Ordering::SeqCst) + 1;
                        peak.fetch_max(now, Ordering::SeqCst);
                        {
                            let _ledger = mutex.lock().await?;
                            // SAFETY: we hold "demo/ledger".
                            unsafe { *ledger.0.get() += 1 };
                        }
                        holders.fetch_sub(1, Ordering::SeqCst);
                        gpu.release()?;
                        count += 1;
                        tokio::task::yield_now().await;
                    }
                    latchkey::Result::Ok(count)
                })
            })
            .collect();
        let mut counts = Vec::new();
        for task in tasks {
            counts.push(task.await.expect("task panicked")?);
        }
        latchkey::Result::Ok(counts)
    })?;

    let mut thread_counts = Vec::new();
    let mut longest_wait = Duration::ZERO;
    for thread in threads {
        let (count, wait) = thread.join().expect("thread panicked")?;
        thread_counts.push(count);
        longest_wait = longest_wait.max(wait);
    }
    let elapsed = start.elapsed();
    let total: u64 = thread_counts.iter().chain(&task_counts).sum();
    // SAFETY: every worker has finished.
    let ledger_total = unsafe { *ledger.0.get() };

    println!("{:<34} {:>12}", "measure", "value");
    println!("{:<34} {:>12}", "grants of demo/ledger", total);
    println!("{:<34} {:>12.0}", "grants per second", total as f64 / elapsed.as_secs_f64());
    println!("{:<34} {:>12}", "grants per thread", join(&thread_counts));
    println!("{:<34} {:>12}", "grants per task", join(&task_counts));
    println!("{:<34} {:>12.2}", "fairness across threads (min/max)", ratio(&thread_counts));
    println!("{:<34} {:>12?}", "longest wait of a thread", longest_wait);
    println!("{:<34} {:>12}", "peak holders of demo/gpu (of 2)", gpu_peak.load(Ordering::SeqCst));

    let exclusion = ledger_total == total;
    let bound = gpu_peak.load(Ordering::SeqCst) <= 2;
    println!("\nmutual exclusion: {}", verdict(exclusion, &format!("ledger {ledger_total} = grants {total}")));
    println!("semaphore bound:  {}", verdict(bound, "never more than 2 holders of demo/gpu"));
    if !(exclusion && bound) {
        std::process::exit(1);
    }
    Ok(())
}

fn join(counts: &[u64]) -> String {
    counts.iter().map(u64::to_string).collect::<Vec<_>>().join(" ")
}

fn ratio(counts: &[u64]) -> f64 {
    let (min, max) = (counts.iter().min().copied().unwrap_or(0), counts.iter().max().copied().unwrap_or(1));
    min as f64 / max.max(1) as f64
}

fn verdict(ok: bool, what: &str) -> String {
    format!("{} ({what})", if ok { "held" } else { "VIOLATED" })
}
