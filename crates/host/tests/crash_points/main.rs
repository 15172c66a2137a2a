//! A process killed at every crash point of the shared-memory protocol, in turn, while
//! other processes use the same names: the others go on, and every invariant holds.
//!
//! Built with the `crash-points` feature (`cargo nextest run -p latchkey-host --features
//! crash-points --test crash_points`). Each *setup* runs a *victim* (this binary run
//! again, `roles::victim`) through every operation of the protocol: fast and slow
//! acquire, release with and without waiters, grants, withdrawals on timeout and on
//! cancel, cede, capacity changes, arenas, names made and reclaimed; some setups first
//! leave a *ghost* that died inside a record lock, inside the table lock, or holding and
//! waiting, so that the victim repairs, rebuilds or scrubs what it left.
//!
//! 1. **Survey**: each setup runs once with `LATCHKEY_CRASH_SURVEY`, listing the points
//!    its victim reaches (`operation/step`). Every `crash_point!` of the source must be
//!    reached by some setup, so a new write without a scenario that reaches it fails here.
//! 2. **Kill**: for each point, the setup that reaches it runs again with
//!    `LATCHKEY_CRASH_AT` set to it; the victim must die there (SIGKILL). Two
//!    *bystanders* use the same names meanwhile and afterwards, and must finish.
//! 3. **Check**: a fresh process touches every name, then asserts: no entry of a process
//!    that ended is left in the file; every lock can be taken whole at once (nothing is
//!    held by the dead); nobody is queued; tokens went on increasing past every token the
//!    bystanders saw.
//!
//! The test prints the points it visited.

mod review;
mod roles;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use latchkey_host::HostScope;
use latchkey_model::{RawScope, RWLOCK_CAPACITY};

pub use roles::{Setup, NAMES};

/// How long a process may take to do its part before the test calls it stuck.
const PATIENCE: Duration = Duration::from_secs(20);

#[test]
fn a_process_killed_at_any_crash_point_leaves_the_others_going() {
    // 1. Survey.
    let mut surveyed: Vec<(String, Setup)> = Vec::new();
    for setup in Setup::ALL {
        for point in survey(setup) {
            if !surveyed.iter().any(|(p, _)| *p == point) {
                surveyed.push((point, setup));
            }
        }
    }
    let declared = declared_steps();
    let reached: BTreeSet<&str> = surveyed.iter().map(|(p, _)| p.rsplit('/').next().unwrap()).collect();
    let missing: Vec<&String> = declared.iter().filter(|step| !reached.contains(step.as_str())).collect();
    assert!(missing.is_empty(), "crash points no setup reaches (add a scenario that does): {missing:?}");

    // 2 and 3. Kill at each point (or at those containing $LATCHKEY_CRASH_ONLY), then check.
    let only = std::env::var("LATCHKEY_CRASH_ONLY").unwrap_or_default();
    let mut failures = Vec::new();
    for (point, setup) in surveyed.iter().filter(|(point, _)| point.contains(&only)) {
        let started = Instant::now();
        eprintln!("killing at {point} ({setup:?})");
        match kill_at(*setup, point) {
            Ok(()) => println!("visited {point} ({setup:?}, {:?})", started.elapsed()),
            Err(why) => {
                println!("FAILED {point} ({setup:?}): {why}");
                failures.push(format!("{point} ({setup:?}): {why}"));
            }
        }
    }
    println!("{} crash points visited, {} steps declared", surveyed.len(), declared.len());
    assert!(failures.is_empty(), "{} crash points failed:\n{}", failures.len(), failures.join("\n"));
}

/// Every step named by a `crash_point!` in the crate's source.
fn declared_steps() -> BTreeSet<String> {
    let mut steps = BTreeSet::new();
    let mut dirs = vec![PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") && !path.ends_with("crash.rs") {
                let source = std::fs::read_to_string(&path).unwrap();
                for piece in source.split("crash_point!(\"").skip(1) {
                    steps.insert(piece.split('"').next().unwrap().to_string());
                }
            }
        }
    }
    steps
}

/// The points a setup's victim reaches.
fn survey(setup: Setup) -> Vec<String> {
    let run = Run::new(setup);
    let file = run.dir.with_extension("survey");
    let _ = std::fs::remove_file(&file);
    let mut victim = run.prepare(&[("LATCHKEY_CRASH_SURVEY", file.to_str().unwrap())]).unwrap();
    let status = victim.wait_for_end();
    assert!(status.success(), "the victim of {setup:?} failed in the survey: {status}");
    let points = std::fs::read_to_string(&file).unwrap_or_default();
    let _ = std::fs::remove_file(&file);
    points.lines().map(str::to_string).collect()
}

/// Kills the victim of `setup` at `point`, with bystanders running, then checks.
fn kill_at(setup: Setup, point: &str) -> Result<(), String> {
    let run = Run::new(setup);
    let mut victim = run.prepare(&[("LATCHKEY_CRASH_AT", point)])?;
    // Bystanders start once the victim has repaired what the ghost left (if it lives that
    // long), so that the victim, not they, reaches the points of the repair.
    let recovered = victim.wait_for_line("recovered");
    let bystanders: Vec<Worker> = (0..2).map(|i| run.start("bystander", &[("BYSTANDER", &i.to_string())])).collect();
    let status = victim.wait_for_end();
    if victim.hung {
        return Err(format!("the victim hung; {}", state(&run.dir)));
    }
    if status.signal() != Some(libc::SIGKILL) {
        return Err(format!("the victim was not killed there (exit {status}; recovered: {recovered})"));
    }
    let mut seen_tokens = [0u64; 3];
    for mut bystander in bystanders {
        let Some(line) = bystander.wait_for_line_starting("tokens") else {
            return Err(format!("a bystander did not finish: a waiter is stuck, or it failed; {}", state(&run.dir)));
        };
        for (seen, token) in seen_tokens.iter_mut().zip(line.split_whitespace().skip(1)) {
            *seen = (*seen).max(token.parse().unwrap());
        }
        let status = bystander.wait_for_end();
        if !status.success() {
            return Err(format!("a bystander failed: {status}"));
        }
    }
    check(&run.dir, seen_tokens)
}

/// What the names look like, for a failure's message.
fn state(dir: &Path) -> String {
    let Ok(scope) = HostScope::open(Some(dir)) else { return "(cannot open the namespace)".to_string() };
    let mut report = String::new();
    for name in NAMES {
        report += &format!("\n  {name}: {:?}", scope.inspect(name));
    }
    report + &format!("\n  entries of others: {:?}", scope.entries_of_others())
}

/// The checks of a fresh process after everyone else has ended.
fn check(dir: &Path, seen_tokens: [u64; 3]) -> Result<(), String> {
    let scope = HostScope::open(Some(dir)).map_err(|e| format!("cannot open the namespace: {e}"))?;
    for name in NAMES.iter().map(|s| s.to_string()).chain(roles::other_names()) {
        let state = scope.inspect(&name).map_err(|e| format!("inspect {name}: {e}"))?;
        if state.in_use > 0 || state.waiters > 0 {
            return Err(format!("{name} is still held or awaited by the dead: {state:?}"));
        }
    }
    let left = scope.entries_of_others().map_err(|e| e.to_string())?;
    if !left.is_empty() {
        return Err(format!("entries of processes that ended are left in the file: {left:?}"));
    }
    for (i, (name, capacity)) in [("m", 1), ("rw", RWLOCK_CAPACITY), ("sem", 3)].into_iter().enumerate() {
        let lock = scope.open(name, capacity).map_err(|e| format!("open {name}: {e}"))?;
        let lease = lock.try_acquire(capacity).map_err(|e| format!("take {name}: {e}"))?;
        let Some(lease) = lease else {
            return Err(format!("{name} cannot be taken whole: {:?}", lock.inspect()));
        };
        if lease.token() <= seen_tokens[i] {
            return Err(format!("{name} granted token {} after {} was seen", lease.token(), seen_tokens[i]));
        }
        lock.release(lease).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// One run of a setup: its namespace directory, removed afterwards.
struct Run {
    setup: Setup,
    dir: PathBuf,
    /// Live processes that only take a slot.
    fillers: std::cell::RefCell<Vec<Worker>>,
}

impl Run {
    fn new(setup: Setup) -> Run {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("latchkey-crash-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Run { setup, dir, fillers: Default::default() }
    }

    /// Starts this binary again in `role`.
    fn start(&self, role: &str, env: &[(&str, &str)]) -> Worker {
        let mut command = Command::new(std::env::current_exe().unwrap());
        command
            .args(["--exact", "roles::role", "--nocapture", "--test-threads=1"])
            .env("LATCHKEY_CRASH_ROLE", role)
            .env("LATCHKEY_CRASH_SETUP", format!("{:?}", self.setup))
            .env("LATCHKEY_CRASH_DIR", &self.dir)
            .env_remove("LATCHKEY_CRASH_AT")
            .env_remove("LATCHKEY_CRASH_SURVEY")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("start a worker");
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let (send, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                if send.send(line).is_err() {
                    return;
                }
            }
        });
        Worker { child, lines, hung: false }
    }

    /// Prepares the setup and starts the victim with `env`.
    fn prepare(&self, env: &[(&str, &str)]) -> Result<Worker, String> {
        match self.setup {
            Setup::GhostDiesLater => {
                let mut victim = self.start("victim", env);
                if !victim.wait_for_line("opened") {
                    return Err("the victim did not open the namespace".to_string());
                }
                self.ghost()?;
                victim.tell("go");
                Ok(victim)
            }
            Setup::Crowded => {
                for _ in 0..roles::CROWD {
                    let mut filler = self.start("filler", &[]);
                    if !filler.wait_for_line("ready") {
                        return Err("a filler did not start".to_string());
                    }
                    self.fillers.borrow_mut().push(filler);
                }
                Ok(self.start("victim", env))
            }
            Setup::GhostInRecordLockWrapped => {
                self.ghost()?;
                self.wrap_first_slots_incarnation();
                Ok(self.start("victim", env))
            }
            _ => {
                self.ghost()?;
                Ok(self.start("victim", env))
            }
        }
    }

    /// Moves the incarnation of slot 0 (the ghost's) on by 2^11 - 1, so that the next process
    /// to take the slot takes the ghost's incarnation again, 2^11 higher.
    fn wrap_first_slots_incarnation(&self) {
        use std::os::unix::fs::FileExt;
        // Slot 0 follows the header page; its `incarnation` is its eighth word (see `layout`).
        const SLOT0_INCARNATION: u64 = 4096 + 28;
        let file = std::fs::OpenOptions::new().read(true).write(true).open(self.dir.join("latchkey.ns")).unwrap();
        let mut word = [0u8; 4];
        file.read_exact_at(&mut word, SLOT0_INCARNATION).unwrap();
        let wrapped = u32::from_le_bytes(word) + (1 << 11) - 1;
        file.write_all_at(&wrapped.to_le_bytes(), SLOT0_INCARNATION).unwrap();
    }

    /// Runs the setup's ghost, if it has one, until it has died as the setup wants.
    fn ghost(&self) -> Result<(), String> {
        let Some(point) = self.setup.ghost_death() else { return Ok(()) };
        let mut ghost = self.start("ghost", &[("LATCHKEY_CRASH_AT", point)]);
        if point.is_empty() {
            // Killed from outside once it holds and waits.
            if !ghost.wait_for_line("ready") {
                return Err("the ghost did not get ready".to_string());
            }
            ghost.kill();
        }
        let status = ghost.wait_for_end();
        if status.signal() != Some(libc::SIGKILL) {
            return Err(format!("the ghost did not die as planned: {status}"));
        }
        Ok(())
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A worker process, killed and reaped when dropped.
struct Worker {
    child: Child,
    /// Its standard output, line by line (read by a thread of its own).
    lines: std::sync::mpsc::Receiver<String>,
    /// Whether it was killed for taking longer than [`PATIENCE`].
    hung: bool,
}

impl Worker {
    /// Reads lines until `line`; false if the worker ended first.
    fn wait_for_line(&mut self, line: &str) -> bool {
        self.wait_for_line_starting(line).is_some()
    }

    /// Reads lines until one that starts with `prefix` (after libtest's own prefix).
    fn wait_for_line_starting(&mut self, prefix: &str) -> Option<String> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let line = self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())).ok()?;
            // libtest prints "test NAME ... " without a newline before the worker's output.
            let text = line.trim_end();
            let text = text.rsplit(" ... ").next().unwrap_or(text);
            if text.starts_with(prefix) {
                return Some(text.to_string());
            }
        }
    }

    /// Writes a line to the worker's standard input.
    fn tell(&mut self, line: &str) {
        use std::io::Write;
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
    }

    fn kill(&mut self) {
        // SAFETY: a plain system call on a child we have not reaped.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGKILL) };
    }

    fn wait_for_end(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                self.hung = true;
                self.kill();
                return self.child.wait().unwrap();
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill();
        let _ = self.child.wait();
    }
}
