//! Death notices: a waiter sleeps without a timer, and is still woken when a process it
//! depends on dies.

use std::fs;
use std::time::{Duration, Instant};

use latchkey::Result;

use super::{expect_line, namespace, sigkill, spawn, url};
use crate::support::{wait_until, waiters};

/// Context switches of every thread of process `pid` so far.
fn context_switches(pid: u32) -> u64 {
    let tasks = fs::read_dir(format!("/proc/{pid}/task")).expect("the process's threads");
    tasks
        .flatten()
        .filter_map(|task| fs::read_to_string(task.path().join("status")).ok())
        .flat_map(|status| {
            status
                .lines()
                .filter(|line| line.contains("ctxt_switches:"))
                .filter_map(|line| line.split_whitespace().nth(1)?.parse::<u64>().ok())
                .collect::<Vec<_>>()
        })
        .sum()
}

#[test]
fn an_idle_waiter_in_another_process_never_wakes_up() -> Result<()> {
    let (dir, scope) = namespace();
    let log = dir.join("log");
    let held = scope.lock_blocking("idle")?;
    let waiter = spawn(&["log", &url(&dir), "idle", "waiter", log.to_str().unwrap()]);
    wait_until("the worker is queued", || waiters(&scope, "idle") == 1);
    // Let it settle into its sleep, then count how often any of its threads runs.
    std::thread::sleep(Duration::from_millis(100));
    let before = context_switches(waiter.id());
    std::thread::sleep(Duration::from_millis(500));
    let woken = context_switches(waiter.id()) - before;
    // A waiter that checked its holders on a 20 ms timer would have run about 25 times.
    assert!(woken <= 2, "the idle waiter's threads ran {woken} times in 500 ms");
    drop(held);
    super::finish(waiter);
    assert_eq!(fs::read_to_string(&log).unwrap(), "waiter\n");
    Ok(())
}

#[test]
fn inspect_shows_no_dead_holder_even_with_nobody_waiting() -> Result<()> {
    let (dir, scope) = namespace();
    let mut holder = spawn(&["hold", &url(&dir), "abandoned"]);
    expect_line(&mut holder, "held");
    assert_eq!(scope.inspect("abandoned")?.holders.len(), 1);
    sigkill(&mut holder); // and reaped: its liveness lock is gone
    let state = scope.inspect("abandoned")?;
    assert_eq!((state.holders.len(), state.in_use), (0, 0), "{state:?}");
    assert!(scope.list()?.is_empty(), "list shows no dead holder either");
    Ok(())
}

#[test]
fn a_sleeping_waiter_is_granted_when_the_holder_is_killed() -> Result<()> {
    let (dir, scope) = namespace();
    let mut holder = spawn(&["hold", &url(&dir), "crash"]);
    expect_line(&mut holder, "held");
    let mutex = scope.mutex("crash")?;
    let waiter =
        std::thread::spawn(move || mutex.lock_blocking_timeout(Duration::from_secs(30)).map(|_| Instant::now()));
    wait_until("the thread is queued", || waiters(&scope, "crash") == 1);
    std::thread::sleep(Duration::from_millis(50)); // asleep, past its spin
    let killed = Instant::now();
    sigkill(&mut holder);
    let granted = waiter.join().expect("the waiting thread")?;
    eprintln!("a sleeping waiter was granted {:?} after the holder's SIGKILL", granted - killed);
    Ok(())
}

#[test]
fn an_async_waiter_is_granted_when_the_holder_is_killed() -> Result<()> {
    let (dir, scope) = namespace();
    let mut holder = spawn(&["hold", &url(&dir), "crash"]);
    expect_line(&mut holder, "held");
    let mutex = scope.mutex("crash")?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    let waiter = std::thread::spawn(move || {
        runtime.block_on(async { tokio::time::timeout(Duration::from_secs(30), mutex.lock()).await.map(|r| r.is_ok()) })
    });
    wait_until("the task is queued", || waiters(&scope, "crash") == 1);
    std::thread::sleep(Duration::from_millis(50));
    sigkill(&mut holder);
    assert_eq!(waiter.join().expect("the waiting thread"), Ok(true), "granted before the 30 s guard");
    Ok(())
}

#[test]
fn a_waiter_behind_a_killed_waiter_watches_the_holder_in_its_place() -> Result<()> {
    let (dir, scope) = namespace();
    let log = dir.join("log");
    let mut holder = spawn(&["hold", &url(&dir), "chain"]);
    expect_line(&mut holder, "held");
    let mut ahead = spawn(&["log", &url(&dir), "chain", "ahead", log.to_str().unwrap()]);
    wait_until("the first waiter is queued", || waiters(&scope, "chain") == 1);
    let mutex = scope.mutex("chain")?;
    let behind = std::thread::spawn(move || mutex.lock_blocking_timeout(Duration::from_secs(30)).map(|_| ()));
    wait_until("the second waiter is queued", || waiters(&scope, "chain") == 2);
    std::thread::sleep(Duration::from_millis(50));
    // The waiter ahead dies while everybody sleeps; then the holder it watched dies too.
    sigkill(&mut ahead);
    wait_until("the dead waiter leaves the queue", || waiters(&scope, "chain") == 1);
    std::thread::sleep(Duration::from_millis(50));
    sigkill(&mut holder);
    behind.join().expect("the waiting thread")?;
    assert!(!log.exists(), "the killed waiter never held the lock");
    Ok(())
}

#[test]
fn a_request_that_found_the_queue_full_of_the_dead_is_let_in() -> Result<()> {
    const QUEUE: usize = 32; // waiter slots per name
    let (dir, scope) = namespace();
    let held = scope.lock_blocking("crowd")?;
    let mut crowd = spawn(&["crowd", &url(&dir), "crowd", &QUEUE.to_string()]);
    wait_until("the queue is full", || waiters(&scope, "crowd") == QUEUE);
    let mutex = scope.mutex("crowd")?;
    let outside = std::thread::spawn(move || mutex.lock_blocking_timeout(Duration::from_secs(30)).map(|_| ()));
    std::thread::sleep(Duration::from_millis(100)); // waiting for room, asleep
    sigkill(&mut crowd);
    wait_until("the dead leave the queue, and the request outside gets in", || waiters(&scope, "crowd") == 1);
    drop(held);
    outside.join().expect("the waiting thread")?;
    Ok(())
}

#[test]
fn a_child_forked_without_exec_neither_acts_for_its_parent_nor_keeps_it_alive() -> Result<()> {
    let (dir, scope) = namespace();
    let report = dir.join("report");
    let mut parent = spawn(&["fork", &url(&dir), "forked", report.to_str().unwrap()]);
    wait_until("the forked child reports", || report.exists());
    let report = fs::read_to_string(&report).unwrap();
    let fields: Vec<&str> = report.split(' ').collect();
    let child: i32 = fields[0].parse().unwrap();
    // SAFETY: plain syscall; the pid is the forked child's, which is still running.
    let kill_child = || unsafe { libc::kill(child, libc::SIGKILL) };
    let checks = (fields[1], fields[2]);
    sigkill(&mut parent);
    // The child still has the namespace file mapped, but not the parent's liveness lock.
    let freed = scope.lock_blocking_timeout("forked", Duration::from_secs(30)).map(drop);
    kill_child();
    assert_eq!(checks.0, "Err(HandleLost)", "the parent's handle, copied, refuses to work in the child");
    assert_eq!(checks.1, "true", "dropping the copied guard did not release the parent's hold");
    freed
}

#[test]
fn a_holder_in_another_pid_namespace_is_noticed_when_killed() -> Result<()> {
    // Its pid means nothing here, so no pidfd can watch it: the waiter checks its slot's
    // liveness lock every 20 ms instead. Needs root (CI has it) and unshare(1).
    let (dir, scope) = namespace();
    let exe = std::env::current_exe().unwrap();
    let child = std::process::Command::new("unshare")
        .args(["--pid", "--fork", "--kill-child"])
        .arg(exe)
        .args(["--exact", "processes::worker::run", "--nocapture", "--test-threads=1"])
        .env(super::worker::ENV, ["hold", &url(&dir), "elsewhere"].join("\u{1f}"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("this test needs unshare(1) from util-linux");
    let mut holder = super::Worker(child);
    expect_line(&mut holder, "held");
    let state = scope.inspect("elsewhere")?;
    assert_eq!(state.holders.len(), 1, "needs root to make a pid namespace: {state:?}");
    let mutex = scope.mutex("elsewhere")?;
    let waiter =
        std::thread::spawn(move || mutex.lock_blocking_timeout(Duration::from_secs(30)).map(|_| Instant::now()));
    wait_until("the thread is queued", || waiters(&scope, "elsewhere") == 1);
    std::thread::sleep(Duration::from_millis(50));
    let killed = Instant::now();
    sigkill(&mut holder); // unshare, whose child (the holder) dies with it
    let granted = waiter.join().expect("the waiting thread")?;
    eprintln!("a holder in another pid namespace: granted {:?} after the SIGKILL", granted - killed);
    Ok(())
}

/// How many threads this process has. (Counting by name would race: a new thread names
/// itself once it runs.)
fn threads() -> usize {
    fs::read_dir("/proc/self/task").expect("this process's threads").count()
}

#[test]
fn async_waits_share_one_thread() -> Result<()> {
    const TASKS: usize = 30; // within the 32 waiter slots of a name
    let (_dir, scope) = namespace();
    let held = scope.lock_blocking("shared-thread")?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    let before = threads();
    let (woken, added) = runtime.block_on(async {
        let tasks: Vec<_> = (0..TASKS)
            .map(|_| {
                let scope = scope.clone();
                tokio::spawn(async move { scope.lock("shared-thread").await.map(drop) })
            })
            .collect();
        while waiters(&scope, "shared-thread") < TASKS {
            tokio::task::yield_now().await;
        }
        let added = threads() - before;
        drop(held);
        let mut woken = 0;
        for task in tasks {
            task.await.expect("a waiting task").expect("granted");
            woken += 1;
        }
        (woken, added)
    });
    assert_eq!(woken, TASKS);
    assert!(added <= 2, "{TASKS} async waits started {added} threads; one sleeps for all of them");
    Ok(())
}
