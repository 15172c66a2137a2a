//! A namespace file corrupted at random, byte by byte: every use of it gives errors or
//! works, and never panics, crashes or hangs. Each try runs in a worker process, so that
//! a crash or a hang is seen and does not take the test down.

use std::os::unix::fs::FileExt;
use std::time::Duration;

use latchkey::Scope;

use super::{Dirs, Proc};

/// Corrupted files tried, each in a process of its own.
const TRIES: u64 = 300;

/// Makes a namespace with names in every state: open, held, shared, queued, reclaimed.
fn populate(url: &str) {
    let scope = Scope::open(url).unwrap();
    let mutex = scope.mutex("m").unwrap();
    let _held = mutex.lock_blocking().unwrap();
    let rw = scope.rwlock("rw").unwrap();
    let (_r1, _r2) = (rw.read_blocking().unwrap(), rw.read_blocking().unwrap());
    let sem = scope.semaphore("sem", 3).unwrap();
    let _two = sem.acquire_blocking(2).unwrap();
    for i in 0..100 {
        drop(scope.lock_blocking(&format!("n/{i}")).unwrap());
    }
    std::thread::scope(|s| {
        let queued = s.spawn(|| mutex.lock_blocking_timeout(Duration::from_millis(1)));
        let _ = queued.join();
    });
}

/// A random generator for the corruption (xorshift, seeded).
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// Issue 8: corrupted values return `Corrupted` instead of panicking; nothing hangs.
#[test]
fn a_namespace_file_corrupted_at_random_gives_errors_never_a_panic_a_crash_or_a_hang() {
    let mut failures = Vec::new();
    for seed in 1..=TRIES {
        let dirs = Dirs::new("latchkey-trust-corrupt");
        populate(&dirs.url());
        let file = std::fs::OpenOptions::new().read(true).write(true).open(dirs.file()).unwrap();
        let len = file.metadata().unwrap().len();
        // A few bytes changed past the header (a header that is wrong is refused at open),
        // some words set to values a latchkey could hold, some to any bytes.
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        for _ in 0..(1 + next(&mut state) % 24) {
            let at = 4096 + next(&mut state) % (len - 4096 - 8);
            let value = match next(&mut state) % 3 {
                0 => next(&mut state),
                1 => next(&mut state) % 256,
                _ => u64::MAX,
            };
            let bytes = value.to_le_bytes();
            let width = [1, 4, 8][(next(&mut state) % 3) as usize];
            file.write_all_at(&bytes[..width], at & !(width as u64 - 1)).unwrap();
        }
        drop(file);
        let mut worker = Proc::spawn(&["corrupted", &dirs.url()]);
        match worker.line_if_any(Duration::from_secs(60)) {
            Some(line) if line == "done" => {}
            Some(line) => failures.push(format!("seed {seed}: reported {line:?}")),
            None => failures.push(format!("seed {seed}: no answer within a minute (hung or crashed)")),
        }
        let status = worker.wait_within(Duration::from_secs(10));
        if !status.success() {
            failures.push(format!("seed {seed}: the worker ended with {status}"));
        }
    }
    assert!(failures.is_empty(), "{} of {TRIES} corrupted files went wrong:\n{}", failures.len(), failures.join("\n"));
}

/// The worker: uses every name of the corrupted namespace in every way; reports `done`.
pub fn use_corrupted(url: &str) {
    let deadline = Duration::from_millis(50);
    if let Ok(scope) = Scope::open(url) {
        let _ = scope.list();
        for name in ["m", "rw", "sem", "new"].into_iter().map(String::from).chain((0..100).map(|i| format!("n/{i}"))) {
            let _ = scope.inspect(&name);
            let _ = scope.try_lock(&name).map(|g| g.map(|g| g.release()));
            let _ = scope.lock_blocking_timeout(&name, deadline).map(|g| g.release());
            if let Ok(mutex) = scope.mutex(&name) {
                let _ = mutex.lock_blocking_timeout(deadline).map(|g| (g.check(), g.release()));
            }
        }
        if let Ok(sem) = scope.semaphore("sem", 3) {
            let _ = sem.acquire_blocking_timeout(3, deadline);
        }
        if let Ok(rw) = scope.rwlock("rw") {
            let _ = rw.write_blocking_timeout(deadline);
        }
    }
    super::worker::say("done");
}
