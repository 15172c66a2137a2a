//! Issue 8, item 5: no hidden limits. Whatever a namespace can hold, it holds: a
//! thousand holders of one semaphore, a hundred readers, five hundred queued waiters in
//! FIFO order, a thousand async waits in one process without a thread each, 4096
//! processes, a hundred thousand open names.
//!
//! Where every request can be granted at once (a semaphore with permits for everybody,
//! readers with no writer), the workers use `try_*`: a refusal is then a wrong answer,
//! not a matter of time, and the test fails at once saying where.

use std::fs;
use std::time::{Duration, Instant};

use latchkey::{Guard, Scope};

use super::{Dirs, Proc, PATIENCE};

/// Parses the numbers after `prefix` in a worker's report.
fn numbers(line: &str, prefix: &str) -> Vec<u64> {
    let rest = line.strip_prefix(prefix).unwrap_or_else(|| panic!("expected {prefix:?}, the worker said {line:?}"));
    rest.split_whitespace().filter_map(|word| word.parse().ok()).collect()
}

/// Issue 8, item 5b: a semaphore of 1000 permits is held 1000 times at once, by 20
/// processes taking 50 permits each (one at a time, with `try_acquire`).
#[test]
fn a_semaphore_of_1000_permits_is_held_1000_times_at_once_by_20_processes() {
    let dirs = Dirs::new("latchkey-trust-sem");
    let scope = Scope::open(&dirs.url()).unwrap();
    let semaphore = scope.semaphore("sem", 1000).unwrap();
    let mut workers: Vec<Proc> =
        (0..20).map(|_| Proc::spawn(&["sem-hold", &dirs.url(), "sem", "1000", "50"])).collect();
    let reports: Vec<String> = workers.iter_mut().map(|w| w.line("its 50 permits")).collect();
    let in_use = scope.inspect("sem").unwrap().in_use;
    for (i, report) in reports.iter().enumerate() {
        assert_eq!(report, "held 50", "worker {i} of 20 (50 permits each, 1000 in all; {in_use} held now)");
    }
    assert_eq!(in_use, 1000, "20 processes hold 50 permits each");
    assert_eq!(semaphore.available().unwrap(), 0);
    workers.into_iter().for_each(Proc::finish);
    assert_eq!(scope.inspect("sem").unwrap().in_use, 0, "every permit was given back");
}

/// Issue 8, item 5c: a reader-writer lock has 100 readers at once, 10 in each of 10
/// processes (taken with `try_read`).
#[test]
fn a_reader_writer_lock_has_100_readers_at_once_from_10_processes() {
    let dirs = Dirs::new("latchkey-trust-readers");
    let scope = Scope::open(&dirs.url()).unwrap();
    let rwlock = scope.rwlock("rw").unwrap();
    let mut workers: Vec<Proc> = (0..10).map(|_| Proc::spawn(&["read-hold", &dirs.url(), "rw", "10"])).collect();
    let reports: Vec<String> = workers.iter_mut().map(|w| w.line("its 10 read holds")).collect();
    let readers = rwlock.readers().unwrap();
    for (i, report) in reports.iter().enumerate() {
        assert_eq!(report, "held 10", "worker {i} of 10 (10 readers each; {readers} readers now)");
    }
    assert_eq!(readers, 100);
    assert!(rwlock.try_write().unwrap().is_none(), "a writer is excluded by 100 readers");
    workers.into_iter().for_each(Proc::finish);
    assert!(rwlock.try_write().unwrap().is_some(), "the readers are gone");
}

/// Issue 8, item 5d: 500 waiters, 50 threads in each of 10 processes, queue for a held
/// mutex one at a time (the processes take turns), and are granted in that order.
#[test]
fn five_hundred_waiters_from_10_processes_are_granted_in_arrival_order() {
    const PROCESSES: usize = 10;
    const WAITERS: usize = 500;
    let dirs = Dirs::new("latchkey-trust-fifo");
    let log = dirs.path("order");
    let scope = Scope::open(&dirs.url()).unwrap();
    let mutex = scope.mutex("fifo").unwrap();
    let held = mutex.lock_blocking().unwrap();
    let mut workers: Vec<Proc> =
        (0..PROCESSES).map(|_| Proc::spawn(&["fifo", &dirs.url(), "fifo", log.to_str().unwrap()])).collect();
    for seq in 0..WAITERS {
        let worker = &mut workers[seq % PROCESSES];
        assert!(worker.tell(&format!("q {seq}")), "worker {} is gone", seq % PROCESSES);
        let said = worker.line("that it started a waiter");
        assert_eq!(said, format!("spawned {seq}"));
        // The waiter is queued once the queue shows it (never more than once).
        let start = Instant::now();
        loop {
            let state = scope.inspect("fifo").unwrap();
            if state.waiters > seq {
                assert_eq!(state.waiters, seq + 1, "one waiter more than before: {state:?}");
                break;
            }
            if let Some(line) = worker.try_line() {
                panic!("waiter {seq} (of {WAITERS}) did not queue: {line}");
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "waiter {seq} (of {WAITERS}) is not in the queue after 30 s: inspect says {} waiters ({state:?})",
                state.waiters
            );
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    drop(held);
    workers.into_iter().for_each(Proc::finish);
    let order: Vec<usize> = fs::read_to_string(&log).unwrap().lines().map(|l| l.parse().unwrap()).collect();
    let expected: Vec<usize> = (0..WAITERS).collect();
    if order != expected {
        let at = order.iter().zip(&expected).position(|(a, b)| a != b).unwrap_or(order.len().min(WAITERS));
        panic!(
            "the {WAITERS} waiters were not granted in arrival order: {} grants; the first difference is at \
             position {at}: {:?}",
            order.len(),
            &order[at.saturating_sub(3)..(at + 5).min(order.len())]
        );
    }
}

/// What an `async` worker reported, and whether all its waits completed.
fn async_waits(mode: &str, names: &[String]) {
    let dirs = Dirs::new("latchkey-trust-async");
    let scope = Scope::open(&dirs.url()).unwrap();
    let mut distinct = names.to_vec();
    distinct.dedup();
    let guards: Vec<Guard<'static>> =
        distinct.iter().map(|name| scope.try_lock(name).unwrap().expect("a fresh name is free")).collect();
    let prefix = if mode == "one" { "one" } else { "d" };
    let mut worker = Proc::spawn(&["async", &dirs.url(), mode, &names.len().to_string(), prefix]);
    let pending = worker.line_within("its waits pending", PATIENCE + PATIENCE);
    let n = numbers(&pending, "pending ");
    let (polled, waiters, before, after) = (n[0], n[1], n[2], n[3]);
    drop(guards);
    let done = worker.line_if_any(PATIENCE + Duration::from_secs(5)).unwrap_or_else(|| "nothing".to_string());
    let count = names.len() as u64;
    let mut wrong = Vec::new();
    if after > before + 2 {
        wrong.push(format!(
            "{count} pending async waits took {} more threads ({before} before, {after} with all pending; at most 2 \
             more are allowed)",
            after - before
        ));
    }
    if polled != count || waiters != count {
        wrong.push(format!("of {count} async waits, {polled} were pending and the queue showed {waiters}"));
    }
    if done != format!("done {count} 0") {
        wrong.push(format!(
            "within {PATIENCE:?} of the release, the worker reported {done:?}, expected \"done {count} 0\" (every \
             wait granted)"
        ));
    }
    assert!(wrong.is_empty(), "{}", wrong.join("; "));
    worker.finish();
}

/// Issue 8, item 5e: 1000 tokio tasks on a current-thread runtime await one held mutex:
/// at most 2 more threads while they wait, and all are granted once it is released.
#[test]
fn a_thousand_async_waits_on_one_mutex_take_no_thread_each() {
    async_waits("one", &vec!["one".to_string(); 1000]);
}

/// Issue 8, item 5e: 1000 tokio tasks on a current-thread runtime each await another
/// held mutex: at most 2 more threads while they wait, and all are granted once released.
#[test]
fn a_thousand_async_waits_on_a_thousand_mutexes_take_no_thread_each() {
    async_waits("many", &(0..1000).map(|i| format!("d/{i}")).collect::<Vec<_>>());
}

/// Issue 8, item 5f: 4096 processes (forked, each opening the namespace afresh) hold a
/// permit of one semaphore at once.
#[test]
fn four_thousand_and_ninety_six_processes_hold_a_permit_in_one_namespace_at_once() {
    const PROCESSES: u64 = 4096;
    let dirs = Dirs::new("latchkey-trust-fork");
    let errors = dirs.path("errors");
    let scope = Scope::open(&dirs.url()).unwrap();
    let mut worker = Proc::spawn(&["fork-many", &dirs.url(), "many", &PROCESSES.to_string(), errors.to_str().unwrap()]);
    let mut ready = worker.line_within("that its children are ready", Duration::from_secs(300));
    if let Some(note) = ready.strip_prefix("note ") {
        eprintln!("fork-many: {note}");
        ready = worker.line_within("that its children are ready", Duration::from_secs(300));
    }
    let n = numbers(&ready, "ready ");
    let (granted, refused, failed, forked) = (n[0], n[1], n[2], n[3]);
    let in_use = scope.inspect("many").unwrap().in_use;
    let first_error = fs::read_dir(&errors)
        .ok()
        .and_then(|mut entries| entries.next())
        .and_then(|entry| fs::read_to_string(entry.ok()?.path()).ok())
        .unwrap_or_default();
    worker.close_stdin();
    let reaped = worker.line_within("that it reaped its children", Duration::from_secs(120));
    worker.finish();
    assert_eq!(forked, PROCESSES, "the worker could not fork {PROCESSES} processes (see its note above)");
    assert_eq!(
        granted, PROCESSES,
        "only {granted} of {PROCESSES} processes took a permit of a semaphore of 5000: {refused} were refused, \
         {failed} failed (the first: {first_error})"
    );
    assert_eq!(in_use, PROCESSES as u32, "inspect while all {PROCESSES} hold a permit");
    assert_eq!(reaped, format!("reaped {PROCESSES} 0"));
    assert!(super::eventually(|| scope.inspect("many").unwrap().in_use == 0), "the dead processes' permits are freed");
}

/// Issue 8, item 5g: 100,000 names are open at once in one process (the handles kept),
/// 1000 of them held; another process sees which.
#[test]
fn a_hundred_thousand_names_are_open_at_once_in_one_process() {
    const NAMES: usize = 100_000;
    let dirs = Dirs::new("latchkey-trust-names");
    let scope = Scope::open(&dirs.url()).unwrap();
    let mut mutexes = Vec::with_capacity(NAMES);
    for i in 0..NAMES {
        match scope.mutex(&format!("n/{i}")) {
            Ok(mutex) => mutexes.push(mutex),
            Err(err) => panic!("name n/{i} could not be opened with {i} names open (of {NAMES}): {err}"),
        }
    }
    let guards: Vec<Guard<'_>> = mutexes
        .iter()
        .step_by(NAMES / 1000)
        .map(|mutex| mutex.try_lock().unwrap().unwrap_or_else(|| panic!("{} is free", mutex.name())))
        .collect();
    assert_eq!(guards.len(), 1000);
    for (name, in_use) in [("n/0", 1), ("n/1", 0), ("n/50000", 1), ("n/99900", 1), ("n/99999", 0)] {
        let state = scope.inspect(name).unwrap();
        assert_eq!((state.capacity, state.in_use), (1, in_use), "{state:?}");
    }
    for (name, expected) in [("n/500", "busy"), ("n/501", "took")] {
        let mut other = Proc::spawn(&["try", &dirs.url(), name]);
        let said = other.line("whether it could take the name");
        assert!(said.starts_with(expected), "another process trying {name}: {said}");
        other.finish();
    }
}
