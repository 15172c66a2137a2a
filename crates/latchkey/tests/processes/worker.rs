//! The jobs worker processes run.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use latchkey::Scope;

/// Set to the job, its fields separated by U+001F, in a worker process.
pub const ENV: &str = "LATCHKEY_TEST_WORKER";

/// The entry point of a worker process; in the test run itself, does nothing.
#[test]
fn run() {
    let Ok(job) = std::env::var(ENV) else { return };
    let fields: Vec<&str> = job.split('\u{1f}').collect();
    let scope = Scope::open(fields[1]).expect("the worker opens the namespace");
    let name = fields[2];
    match fields[0] {
        "count" => {
            let (times, file): (u64, &Path) = (fields[3].parse().unwrap(), Path::new(fields[4]));
            let mutex = scope.mutex(name).unwrap();
            for _ in 0..times {
                let _guard = mutex.lock_blocking().unwrap();
                let value: u64 = fs::read_to_string(file).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0);
                fs::write(file, (value + 1).to_string()).unwrap();
            }
        }
        "log" => {
            let _guard = scope.lock_blocking(name).unwrap();
            append(Path::new(fields[4]), fields[3]);
        }
        "write-log" => {
            let rwlock = scope.rwlock(name).unwrap();
            let _guard = rwlock.write_blocking().unwrap();
            append(Path::new(fields[4]), fields[3]);
        }
        "read-log" => {
            let rwlock = scope.rwlock(name).unwrap();
            let _guard = rwlock.read_blocking().unwrap();
            append(Path::new(fields[4]), fields[3]);
        }
        "bounded" => {
            let (capacity, marks): (u32, &Path) = (fields[3].parse().unwrap(), Path::new(fields[4]));
            let semaphore = scope.semaphore(name, capacity).unwrap();
            for _ in 0..50 {
                let _permit = semaphore.acquire_blocking(1).unwrap();
                let mark = marks.join(std::process::id().to_string());
                fs::write(&mark, "").unwrap();
                let inside = fs::read_dir(marks).unwrap().count();
                assert!(inside <= capacity as usize, "{inside} holders of a semaphore of {capacity}");
                fs::remove_file(&mark).unwrap();
            }
        }
        "hold" => {
            let _guard = scope.lock_blocking(name).unwrap();
            println!("held");
            std::io::stdout().flush().unwrap();
            std::thread::sleep(Duration::from_secs(600));
        }
        "token" => {
            let guard = scope.lock_blocking(name).unwrap();
            println!("token {}", guard.fencing_token());
        }
        "churn" => churn(&scope, name, Path::new(fields[3])),
        "crowd" => {
            // Threads that queue for the lock and never get it (the worker is killed).
            let threads: u32 = fields[3].parse().unwrap();
            for _ in 0..threads {
                let scope = scope.clone();
                let name = name.to_string();
                std::thread::spawn(move || drop(scope.lock_blocking(&name)));
            }
            std::thread::sleep(Duration::from_secs(600));
        }
        "fork" => {
            let guard = scope.lock_blocking(name).unwrap();
            let mutex = scope.mutex(name).unwrap();
            // SAFETY: the child only uses latchkey and the standard library, then sleeps
            // until it is killed.
            if unsafe { libc::fork() } == 0 {
                let old_handle = mutex.try_lock().map(|g| g.is_some()).map_err(|e| e.kind());
                drop(guard); // the parent's hold, copied: must not release it
                let again = Scope::open(fields[1]).unwrap();
                let still_held = again.try_lock(name).unwrap().is_none();
                let report = format!("{} {old_handle:?} {still_held}", std::process::id());
                fs::write(format!("{}.tmp", fields[3]), report).unwrap();
                fs::rename(format!("{}.tmp", fields[3]), fields[3]).unwrap();
                std::thread::sleep(Duration::from_secs(600));
            }
            std::thread::sleep(Duration::from_secs(600));
        }
        "many-names" => many_names(&scope, name, fields[3].parse().unwrap(), Path::new(fields[4])),
        other => panic!("unknown worker job {other:?}"),
    }
    std::process::exit(0);
}

/// Whether `pid` is a running process (a killed one not yet reaped is a zombie: dead).
fn is_running(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses.
        Ok(stat) => stat.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

fn append(file: &Path, line: &str) {
    let mut f = fs::OpenOptions::new().create(true).append(true).open(file).unwrap();
    writeln!(f, "{line}").unwrap();
}

/// Takes the lock forever, checking on entry that no live process is inside: the marker
/// file names the pid inside; a marker left by a killed process is stale, not a breach.
fn churn(scope: &Scope, name: &str, counter: &Path) {
    let dir = counter.parent().unwrap();
    let marker = dir.join("inside");
    let mutex = scope.mutex(name).unwrap();
    loop {
        let _guard = mutex.lock_blocking().unwrap();
        if let Ok(pid) = fs::read_to_string(&marker) {
            let pid: i32 = pid.trim().parse().unwrap_or(0);
            if is_running(pid) {
                fs::write(dir.join("violation"), format!("pid {pid} was inside when {} entered", std::process::id()))
                    .unwrap();
            }
        }
        fs::write(&marker, std::process::id().to_string()).unwrap();
        let value: u64 = fs::read_to_string(counter).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0);
        fs::write(counter, (value + 1).to_string()).unwrap();
        fs::remove_file(&marker).unwrap();
    }
}

/// Takes `rounds` locks on names drawn from more than the namespace's table holds, so
/// names are added and reclaimed under the other processes' feet; a marker file per name,
/// created exclusively, shows that nobody else is inside.
fn many_names(scope: &Scope, prefix: &str, rounds: u64, marks: &Path) {
    let mut rng = crate::support::Rng::new(u64::from(std::process::id()));
    for _ in 0..rounds {
        let name = format!("{prefix}{}", rng.below(6_000));
        let _guard = scope.lock_blocking(&name).unwrap();
        let mark = marks.join(name.replace('/', "_"));
        if fs::OpenOptions::new().write(true).create_new(true).open(&mark).is_err() {
            fs::write(marks.join("violation"), format!("two holders of {name}")).unwrap();
        }
        fs::remove_file(&mark).unwrap();
    }
}
