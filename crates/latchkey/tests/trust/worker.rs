//! The jobs of the worker processes of the `trust` suite. A worker reports through lines
//! that start with `@@ ` (see [`super::MARK`]) and waits for the test on its stdin.

use std::fs;
use std::future::Future;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use latchkey::{Guard, Scope};

use crate::support::worker::read_line;
pub use crate::support::worker::{kind, say};

/// Set to the job, its fields separated by U+001F, in a worker process.
pub const ENV: &str = "LATCHKEY_TRUST_WORKER";

/// How long a worker waits for a lock that a correct implementation grants at once.
const GRANT_LIMIT: Duration = Duration::from_secs(30);

/// The entry point of a worker process; in the test run itself, does nothing.
#[test]
fn run() {
    let Ok(job) = std::env::var(ENV) else { return };
    let fields: Vec<&str> = job.split('\u{1f}').collect();
    let url = fields[1];
    match fields[0] {
        "take" => take(url, fields[2]),
        "try" => try_take(url, fields[2]),
        "hold" => hold(url, fields[2]),
        "sem-hold" => sem_hold(url, fields[2], fields[3].parse().unwrap(), fields[4].parse().unwrap()),
        "read-hold" => read_hold(url, fields[2], fields[3].parse().unwrap()),
        "fifo" => fifo(url, fields[2], Path::new(fields[3])),
        "async" => async_waits(url, fields[2], fields[3].parse().unwrap(), fields[4]),
        "fork-many" => fork_many(url, fields[2], fields[3].parse().unwrap(), Path::new(fields[4])),
        "torture" => super::torture::worker(url, fields[2].parse().unwrap(), Path::new(fields[3])),
        "final" => super::torture::final_check(url),
        "corrupted" => super::corrupted::use_corrupted(url),
        other => panic!("unknown worker job {other:?}"),
    }
    std::process::exit(0);
}

fn open(url: &str) -> Option<Scope> {
    match Scope::open(url) {
        Ok(scope) => Some(scope),
        Err(err) => {
            say(format!("open-error {}", kind(&err)));
            None
        }
    }
}

/// Takes the mutex (waiting a while), reports `token T`, releases it.
fn take(url: &str, name: &str) {
    let Some(scope) = open(url) else { return };
    match scope.mutex(name).and_then(|m| m.lock_blocking_timeout(GRANT_LIMIT).map(|g| g.fencing_token())) {
        Ok(token) => say(format!("token {token}")),
        Err(err) => say(format!("error {}", kind(&err))),
    }
}

/// Tries the mutex once: `took T` (and releases it), `busy`, or `error KIND`.
fn try_take(url: &str, name: &str) {
    let Some(scope) = open(url) else { return };
    let mutex = match scope.mutex(name) {
        Ok(mutex) => mutex,
        Err(err) => return say(format!("error {}", kind(&err))),
    };
    let report = match mutex.try_lock() {
        Ok(Some(guard)) => format!("took {}", guard.fencing_token()),
        Ok(None) => "busy".to_string(),
        Err(err) => format!("error {}", kind(&err)),
    };
    say(report);
}

/// Takes the mutex, reports `held T`, waits for a line on stdin, then reports what
/// `check()` and `release()` say.
fn hold(url: &str, name: &str) {
    let Some(scope) = open(url) else { return };
    let mutex = match scope.mutex(name) {
        Ok(mutex) => mutex,
        Err(err) => return say(format!("error {}", kind(&err))),
    };
    let guard = match mutex.lock_blocking_timeout(GRANT_LIMIT) {
        Ok(guard) => guard,
        Err(err) => return say(format!("error {}", kind(&err))),
    };
    say(format!("held {}", guard.fencing_token()));
    let _ = read_line();
    match guard.check() {
        Ok(()) => say("check ok"),
        Err(err) => say(format!("check {}", kind(&err))),
    }
    match guard.release() {
        Ok(()) => say("release ok"),
        Err(err) => say(format!("release {}", kind(&err))),
    }
}

/// A name's state in a few words: permits in use, holders, waiters.
fn summary(scope: &Scope, name: &str) -> String {
    match scope.inspect(name) {
        Ok(s) => format!("{} permits in use by {} holders, {} waiters", s.in_use, s.holders.len(), s.waiters),
        Err(err) => kind(&err),
    }
}

/// Takes `count` permits of the semaphore one by one with `try_acquire` (there are
/// enough for everybody: each must be granted at once), reports `held N`, and keeps them
/// until stdin ends.
fn sem_hold(url: &str, name: &str, capacity: u32, count: usize) {
    let Some(scope) = open(url) else { return };
    let semaphore = match scope.semaphore(name, capacity) {
        Ok(semaphore) => semaphore,
        Err(err) => return say(format!("error opening: {}", kind(&err))),
    };
    let mut guards = Vec::with_capacity(count);
    for i in 0..count {
        match semaphore.try_acquire(1) {
            Ok(Some(guard)) => guards.push(guard),
            Ok(None) => {
                let state = summary(&scope, name);
                return say(format!("refused: permit {} of this process was not granted ({state})", i + 1));
            }
            Err(err) => return say(format!("refused: permit {} of this process: {}", i + 1, kind(&err))),
        }
    }
    say(format!("held {}", guards.len()));
    while read_line().is_some() {}
    drop(guards);
    say("released");
}

/// Takes `count` read holds of the reader-writer lock with `try_read`, reports
/// `held N`, and keeps them until stdin ends.
fn read_hold(url: &str, name: &str, count: usize) {
    let Some(scope) = open(url) else { return };
    let rwlock = match scope.rwlock(name) {
        Ok(rwlock) => rwlock,
        Err(err) => return say(format!("error opening: {}", kind(&err))),
    };
    let mut guards = Vec::with_capacity(count);
    for i in 0..count {
        match rwlock.try_read() {
            Ok(Some(guard)) => guards.push(guard),
            Ok(None) => {
                let state = summary(&scope, name);
                return say(format!("refused: read hold {} of this process was not granted ({state})", i + 1));
            }
            Err(err) => return say(format!("refused: read hold {} of this process: {}", i + 1, kind(&err))),
        }
    }
    say(format!("held {}", guards.len()));
    while read_line().is_some() {}
    drop(guards);
    say("released");
}

/// For each line `q SEQ` on stdin, starts a thread that waits for the mutex and, once
/// granted, appends `SEQ` to `log` and releases it; answers `spawned SEQ`. At the end of
/// stdin, waits for its threads and reports `done`.
fn fifo(url: &str, name: &str, log: &Path) {
    let Some(scope) = open(url) else { return };
    let mut threads = Vec::new();
    while let Some(line) = read_line() {
        let seq: usize = line.strip_prefix("q ").and_then(|s| s.parse().ok()).expect("q SEQ");
        let (scope, name, log) = (scope.clone(), name.to_string(), log.to_path_buf());
        threads.push(std::thread::spawn(move || match scope.lock_blocking(&name) {
            Ok(guard) => {
                append(&log, &format!("{seq}\n"));
                guard.release().unwrap();
            }
            Err(err) => say(format!("error waiter {seq}: {}", kind(&err))),
        }));
        say(format!("spawned {seq}"));
    }
    for thread in threads {
        thread.join().unwrap();
    }
    say("done");
}

/// Appends `text` to `file` in one write (O_APPEND).
pub fn append(file: &Path, text: &str) {
    let mut f = fs::OpenOptions::new().create(true).append(true).open(file).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

/// Threads of this process now.
fn threads() -> usize {
    fs::read_dir("/proc/self/task").expect("/proc/self/task").count()
}

/// `count` async tasks on a current-thread runtime wait for held mutexes: all for the
/// mutex `prefix` (`mode` "one") or each for its own `prefix/i` (`mode` "many"). Reports
/// `pending P waiters W threads BEFORE AFTER` once every lock future has returned
/// Pending, then waits for all of them to be granted (the test releases the locks) and
/// reports `done OK FAILED`.
fn async_waits(url: &str, mode: &str, count: usize, prefix: &str) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    let runtime = crate::support::runtime();
    let Some(scope) = open(url) else { return };
    let names: Vec<String> =
        (0..count).map(|i| if mode == "one" { prefix.to_string() } else { format!("{prefix}/{i}") }).collect();
    let before = threads();
    runtime.block_on(async {
        let pending = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::with_capacity(count);
        for name in &names {
            let (scope, name, pending) = (scope.clone(), name.clone(), pending.clone());
            tasks.push(tokio::spawn(async move {
                let mutex = scope.mutex(&name)?;
                let mut lock = std::pin::pin!(mutex.lock());
                let mut counted = false;
                let guard = std::future::poll_fn(|cx| {
                    let poll = lock.as_mut().poll(cx);
                    if poll.is_pending() && !counted {
                        counted = true;
                        pending.fetch_add(1, Ordering::SeqCst);
                    }
                    poll
                })
                .await?;
                guard.release()
            }));
        }
        let mut distinct = names.clone();
        distinct.dedup();
        let waiting = || -> usize { distinct.iter().map(|n| scope.inspect(n).map(|s| s.waiters).unwrap_or(0)).sum() };
        // Every future has been polled and is pending; then the queue shows them all (or
        // the patience runs out, and the test reports how many it shows).
        let start = Instant::now();
        while pending.load(Ordering::SeqCst) < count && start.elapsed() < super::PATIENCE {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let start = Instant::now();
        while waiting() < count && start.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let after = threads();
        say(format!("pending {} waiters {} threads {before} {after}", pending.load(Ordering::SeqCst), waiting()));
        let (mut ok, mut failed) = (0, 0);
        let deadline = tokio::time::Instant::now() + super::PATIENCE;
        for task in tasks {
            match tokio::time::timeout_at(deadline, task).await {
                Ok(Ok(Ok(()))) => ok += 1,
                Ok(Ok(Err(err))) => {
                    failed += 1;
                    if failed == 1 {
                        say(format!("error {}", kind(&err)));
                    }
                }
                _ => failed += 1,
            }
        }
        say(format!("done {ok} {failed}"));
    });
}

/// Forks `count` children (no exec). Each opens the namespace afresh, takes one permit of
/// the semaphore `name` of 5000 with `try_acquire`, writes one byte to a pipe (`1`
/// granted, `0` refused, `2` failed, with the error in `errors/<i>`), and waits for the
/// end of another pipe before `_exit(0)`. Reports `ready GRANTED REFUSED FAILED FORKED`;
/// at the end of stdin lets the children go, reaps them and reports `reaped N UNCLEAN`.
fn fork_many(url: &str, name: &str, count: usize, errors: &Path) {
    let mut ready = [0i32; 2];
    let mut release = [0i32; 2];
    // SAFETY: plain pipe(2) calls into arrays of two descriptors.
    unsafe {
        assert_eq!(libc::pipe(ready.as_mut_ptr()), 0);
        assert_eq!(libc::pipe(release.as_mut_ptr()), 0);
    }
    fs::create_dir_all(errors).unwrap();
    let mut children = Vec::with_capacity(count);
    let mut fork_error = None;
    for i in 0..count {
        // SAFETY: this worker opened no scope, and the child only uses latchkey and the
        // standard library, then _exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: descriptors of this process; the child ends with _exit.
            unsafe {
                libc::close(ready[0]);
                libc::close(release[1]);
                let byte = match child_permit(url, name) {
                    Ok(Some(guard)) => {
                        std::mem::forget(guard); // held until the process exits
                        b'1'
                    }
                    Ok(None) => b'0',
                    Err(err) => {
                        let _ = fs::write(errors.join(i.to_string()), kind(&err));
                        b'2'
                    }
                };
                libc::write(ready[1], [byte].as_ptr().cast(), 1);
                let mut buf = [0u8; 1];
                loop {
                    let n = libc::read(release[0], buf.as_mut_ptr().cast(), 1);
                    if n == 0 || (n < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted) {
                        break;
                    }
                }
                libc::_exit(0);
            }
        }
        if pid < 0 {
            fork_error = Some(format!("fork {i} failed: {}", std::io::Error::last_os_error()));
            break;
        }
        children.push(pid);
    }
    // SAFETY: our copies of the ends the children use.
    unsafe {
        libc::close(ready[1]);
        libc::close(release[0]);
    }
    if let Some(error) = fork_error {
        say(format!("note {error}"));
    }
    let (mut granted, mut refused, mut failed) = (0, 0, 0);
    let deadline = Instant::now() + Duration::from_secs(240);
    while granted + refused + failed < children.len() && Instant::now() < deadline {
        let mut fds = libc::pollfd { fd: ready[0], events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(&mut fds, 1, 1000) } <= 0 {
            continue;
        }
        let mut buf = [0u8; 4096];
        // SAFETY: reading into a buffer of its size.
        let n = unsafe { libc::read(ready[0], buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            break;
        }
        for &b in &buf[..n as usize] {
            match b {
                b'1' => granted += 1,
                b'0' => refused += 1,
                _ => failed += 1,
            }
        }
    }
    say(format!("ready {granted} {refused} {failed} {}", children.len()));
    while read_line().is_some() {}
    // SAFETY: closing our write end: every child sees the end of the pipe.
    unsafe { libc::close(release[1]) };
    let mut unclean = 0;
    for pid in &children {
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(*pid, &mut status, 0) };
        if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
            unclean += 1;
        }
    }
    say(format!("reaped {} {unclean}", children.len()));
}

fn child_permit(url: &str, name: &str) -> latchkey::Result<Option<Guard<'static>>> {
    // Leaked: the child never returns, and the guard must outlive this function.
    let scope: &'static Scope = Box::leak(Box::new(Scope::open(url)?));
    let semaphore = Box::leak(Box::new(scope.semaphore(name, 5000)?));
    semaphore.try_acquire(1)
}
