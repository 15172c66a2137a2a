//! The host scope with real processes: workers are this test binary run again with
//! `LATCHKEY_TEST_WORKER` set, and are killed with SIGKILL at random moments.

mod liveness;
mod worker;

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use latchkey::{ErrorKind, Result, Scope};

use crate::support::{fresh_dir, wait_until, Rng, TempDir};

/// A fresh namespace directory, and its scope.
fn namespace() -> (TempDir, Scope) {
    let dir = TempDir(fresh_dir("latchkey-proc-test"));
    let scope = Scope::open(&format!("host:{}", dir.display())).expect("open a fresh host namespace");
    (dir, scope)
}

/// A worker process, killed and reaped when dropped (a test that fails early leaves none
/// behind).
struct Worker(Child);

impl std::ops::Deref for Worker {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Worker {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a worker: `task` is one of the jobs in `worker.rs`.
fn spawn(task: &[&str]) -> Worker {
    let child = Command::new(std::env::current_exe().expect("the test binary"))
        .args(["--exact", "processes::worker::run", "--nocapture", "--test-threads=1"])
        .env(worker::ENV, task.join("\u{1f}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start a worker process");
    Worker(child)
}

/// Reads the worker's stdout until it prints `line`.
fn expect_line(child: &mut Child, line: &str) {
    let stdout = child.stdout.as_mut().expect("piped stdout");
    let mut reader = BufReader::new(stdout);
    let mut got = String::new();
    // libtest prints "test NAME ... " without a newline before the worker's own output.
    while !got.trim_end().ends_with(line) {
        got.clear();
        assert!(reader.read_line(&mut got).expect("read the worker's output") > 0, "the worker ended before {line:?}");
    }
}

fn sigkill(child: &mut Child) {
    // SAFETY: plain syscall on a pid we started and have not yet reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let _ = child.wait();
}

fn finish(mut worker: Worker) {
    let status = worker.wait().expect("wait for a worker");
    assert!(status.success(), "a worker failed: {status}");
}

fn url(dir: &Path) -> String {
    format!("host:{}", dir.display())
}

fn read_counter(path: &Path) -> u64 {
    fs::read_to_string(path).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0)
}

#[test]
fn processes_exclude_each_other_on_a_plain_file_counter() {
    let (dir, _scope) = namespace();
    let counter = dir.join("counter");
    let workers: Vec<Worker> =
        (0..4).map(|_| spawn(&["count", &url(&dir), "counter", "300", counter.to_str().unwrap()])).collect();
    workers.into_iter().for_each(finish);
    assert_eq!(read_counter(&counter), 4 * 300, "every increment of every process was kept");
}

#[test]
fn waiters_from_several_processes_are_granted_in_arrival_order() -> Result<()> {
    let (dir, scope) = namespace();
    let log = dir.join("order");
    let mutex = scope.mutex("fifo")?;
    let held = mutex.lock_blocking()?;
    let mut workers = Vec::new();
    for (i, tag) in ["a", "b", "c", "d"].into_iter().enumerate() {
        workers.push(spawn(&["log", &url(&dir), "fifo", tag, log.to_str().unwrap()]));
        wait_until("the worker is queued", || scope.inspect("fifo").map(|s| s.waiters).unwrap_or(0) == i + 1);
    }
    drop(held);
    workers.into_iter().for_each(finish);
    assert_eq!(fs::read_to_string(&log).unwrap(), "a\nb\nc\nd\n");
    Ok(())
}

#[test]
fn a_writer_waiting_in_another_process_holds_back_new_readers() -> Result<()> {
    let (dir, scope) = namespace();
    let log = dir.join("order");
    let rw = scope.rwlock("rw")?;
    let read = rw.read_blocking()?;
    let writer = spawn(&["write-log", &url(&dir), "rw", "writer", log.to_str().unwrap()]);
    wait_until("the writer is queued", || rw.writers_waiting().unwrap_or(0) == 1);
    assert!(rw.try_read()?.is_none(), "a queued writer holds back new readers");
    let reader = spawn(&["read-log", &url(&dir), "rw", "reader", log.to_str().unwrap()]);
    wait_until("the reader is queued", || scope.inspect("rw").map(|s| s.waiters).unwrap_or(0) == 2);
    drop(read);
    finish(writer);
    finish(reader);
    assert_eq!(fs::read_to_string(&log).unwrap(), "writer\nreader\n");
    Ok(())
}

#[test]
fn a_semaphore_bounds_holders_across_processes() {
    let (dir, _scope) = namespace();
    let marks = dir.join("holders");
    fs::create_dir_all(&marks).unwrap();
    let workers: Vec<Worker> =
        (0..5).map(|_| spawn(&["bounded", &url(&dir), "gpu", "2", marks.to_str().unwrap()])).collect();
    workers.into_iter().for_each(finish); // each worker asserts the bound itself
}

#[test]
fn a_timeout_across_processes_leaves_no_waiter() -> Result<()> {
    let (dir, scope) = namespace();
    let mut holder = spawn(&["hold", &url(&dir), "held"]);
    expect_line(&mut holder, "held");
    let err = scope.mutex("held")?.lock_blocking_timeout(Duration::from_millis(100)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert_eq!(scope.inspect("held")?.waiters, 0);
    let holders = scope.inspect("held")?.holders;
    assert_eq!(holders.len(), 1);
    assert_eq!(holders[0].pid, holder.id(), "inspect names the holding process");
    sigkill(&mut holder);
    Ok(())
}

#[test]
fn processes_adding_and_reclaiming_names_together_still_exclude_each_other() {
    let (dir, scope) = namespace();
    let marks = dir.join("marks");
    fs::create_dir_all(&marks).unwrap();
    let workers: Vec<Worker> =
        (0..3).map(|_| spawn(&["many-names", &url(&dir), "n/", "8000", marks.to_str().unwrap()])).collect();
    workers.into_iter().for_each(finish);
    assert!(!marks.join("violation").exists(), "{}", fs::read_to_string(marks.join("violation")).unwrap_or_default());
    assert!(scope.list().unwrap().is_empty(), "nothing is left held");
}

#[test]
fn a_killed_holder_frees_the_lock_for_a_waiter() -> Result<()> {
    let (dir, scope) = namespace();
    let mutex = scope.mutex("crash")?;
    let mut holder = spawn(&["hold", &url(&dir), "crash"]);
    expect_line(&mut holder, "held");
    assert!(mutex.try_lock()?.is_none());
    let killed = Instant::now();
    sigkill(&mut holder);
    let guard = mutex.lock_blocking_timeout(Duration::from_secs(30))?;
    // Measured, not asserted (timing never decides a test): the target is 50 ms.
    eprintln!("crash release took {:?}", killed.elapsed());
    assert_eq!(guard.permits(), 1);
    Ok(())
}

#[test]
fn sigkill_at_random_moments_never_breaks_exclusion_or_leaves_anything_behind() -> Result<()> {
    let (dir, scope) = namespace();
    let counter = dir.join("counter");
    let spawn_churner = || spawn(&["churn", &url(&dir), "churn", counter.to_str().unwrap()]);
    let mut workers: Vec<Worker> = (0..4).map(|_| spawn_churner()).collect();
    wait_until("the workers are under way", || read_counter(&counter) > 0);
    let mut rng = Rng::new(0x5eed);
    for _ in 0..40 {
        std::thread::sleep(Duration::from_millis(rng.below(40)));
        let victim = rng.below(workers.len() as u64) as usize;
        sigkill(&mut workers[victim]);
        workers[victim] = spawn_churner();
    }
    for worker in &mut workers {
        sigkill(worker);
    }
    // Each worker checked, on entry, that nobody alive was inside (see `churn`).
    assert!(!dir.join("violation").exists(), "{}", fs::read_to_string(dir.join("violation")).unwrap_or_default());
    // Every lock can be taken again, and nothing is left over.
    let guard = scope.lock_blocking_timeout("churn", Duration::from_secs(30))?;
    let state = scope.inspect("churn")?;
    assert_eq!((state.in_use, state.holders.len(), state.waiters), (1, 1, 0), "{state:?}");
    assert_eq!(state.holders[0].pid, std::process::id());
    drop(guard);
    let state = scope.inspect("churn")?;
    assert_eq!((state.in_use, state.waiters), (0, 0), "{state:?}");
    Ok(())
}

#[test]
fn an_interval_lock_cedes_to_a_waiter_in_another_process() -> Result<()> {
    let (dir, scope) = namespace();
    let log = dir.join("order");
    let lock = scope.interval_lock("turns", Duration::from_millis(1))?;
    let mut guard = lock.lock_blocking()?;
    let first = guard.fencing_token();
    guard = guard.cede_blocking()?; // nobody waits: kept
    assert_eq!(guard.fencing_token(), first);
    let worker = spawn(&["log", &url(&dir), "turns", "worker", log.to_str().unwrap()]);
    wait_until("the worker is queued", || scope.inspect("turns").map(|s| s.waiters).unwrap_or(0) == 1);
    guard = guard.cede_blocking()?; // hands over, and waits at the back
    assert_eq!(fs::read_to_string(&log).unwrap(), "worker\n", "the waiter held the lock in between");
    assert!(guard.fencing_token() > first + 1, "the worker's grant and ours are both newer");
    finish(worker);
    Ok(())
}

/// The fencing token a worker process got for `name`.
fn token_of_a_new_process(dir: &Path, name: &str) -> u64 {
    let mut worker = spawn(&["token", &url(dir), name]);
    let stdout = worker.stdout.take().expect("piped stdout");
    let output = std::io::read_to_string(stdout).expect("read the worker's output");
    finish(worker);
    let (_, token) = output.rsplit_once("token ").expect("the worker prints its token");
    token.trim().parse().expect("a number")
}

#[test]
fn fencing_tokens_keep_increasing_across_process_restarts() -> Result<()> {
    let (dir, scope) = namespace();
    let first = token_of_a_new_process(&dir, "fenced");
    let second = token_of_a_new_process(&dir, "fenced");
    let ours = scope.lock_blocking("fenced")?.fencing_token();
    assert!(first < second && second < ours, "tokens {first}, {second}, {ours} must increase");
    Ok(())
}
