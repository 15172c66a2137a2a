//! Suite `host`: the host scope (a shared-memory file, futex waits, OFD-lock liveness)
//! against the cross-process locks a user would otherwise pick: `flock(2)` directly and
//! through `std`, `fs4` and `named-lock`, and a POSIX named semaphore.
//!
//! Every run works in a fresh namespace directory (`$TMPDIR/latchkey-bench-<pid>`, removed
//! at the end) that also holds the peers' lock files. The hand-off and crash cases run
//! child processes of this binary, started with a hidden first argument
//! ([`HANDOFF_CHILD`], [`CRASH_CHILD`]) that `main` hands to [`child_main`]. The two
//! hand-off processes are pinned to two different CPUs, so that they really run at once.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use latchkey::Scope;
use latchkey_bench::{alternate, per_op, Row, ROUNDS};

/// Iterations per round of an uncontended case, for ours (tens of ns per operation).
const OURS_ITERS: u64 = 1_000_000;
/// Iterations per round of an uncontended case, for the peers (a system call or two).
const SYSCALL_ITERS: u64 = 200_000;
/// Lock-and-unlock cycles of each of the two processes per hand-off round.
const HANDOFF_ITERS: u64 = 50_000;
/// Kills per crash-release measurement, ours and the peer alternating.
const CRASH_ROUNDS: usize = 7;
/// How long the waiting thread is given to enter its wait before the holder is killed.
const WAITER_SETTLE: Duration = Duration::from_millis(30);
/// Added to [`WAITER_SETTLE`] once more per crash round, so that the kills fall at
/// different moments of a waiter's periodic liveness check (a fixed delay would measure
/// one phase of it only): 0, 3, … 18 ms.
const KILL_SPREAD: Duration = Duration::from_millis(3);

/// First argument of a hand-off child: `__host-handoff-child DIR ITERS ours|flock CPU`
/// (CPU: the one to pin the child to, or `-`).
pub const HANDOFF_CHILD: &str = "__host-handoff-child";
/// First argument of a crash child: `__host-crash-child DIR ours|flock`.
pub const CRASH_CHILD: &str = "__host-crash-child";

const FLOCK_PEER: &str = "flock(2) LOCK_EX+LOCK_UN (libc)";
/// The mutex the hand-off processes share, and the peer's lock file.
const HANDOFF_NAME: &str = "bench/handoff";
const HANDOFF_FLOCK: &str = "handoff.flock";
/// The counter the hand-off processes increment under the lock (a mapped file).
const HANDOFF_COUNTER: &str = "handoff.counter";
/// The mutex a crash child holds when it is killed, and the peer's lock file.
const CRASH_NAME: &str = "bench/crash";
const CRASH_FLOCK: &str = "crash.flock";

pub fn run(emit: &dyn Fn(Row)) {
    let dir = BenchDir::create();
    let scope = Scope::open(&format!("host:{}", dir.0.display())).expect("cannot open the host scope");
    uncontended(emit, &scope, &dir.0);
    handoff(emit, &scope, &dir.0);
    crash_release(emit, &scope, &dir.0);
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

fn row(case: &str, ours_ns: f64, peer: &str, peer_ns: f64) -> Row {
    Row { case: case.to_string(), ours_ns, peer: peer.to_string(), peer_ns }
}

/// The run's namespace directory, removed on drop.
struct BenchDir(PathBuf);

impl BenchDir {
    fn create() -> BenchDir {
        let path = std::env::temp_dir().join(format!("latchkey-bench-{}", std::process::id()));
        // A directory left by an earlier process with the same pid is stale.
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir(&path).expect("cannot create the bench directory");
        BenchDir(path)
    }
}

impl Drop for BenchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn open_lock_file(path: &Path) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()))
}

/// `flock(2)` on the file's own open file description; panics on failure.
fn flock(file: &File, operation: libc::c_int) {
    // SAFETY: a plain system call on a descriptor that `file` keeps open.
    while unsafe { libc::flock(file.as_raw_fd(), operation) } != 0 {
        let err = io::Error::last_os_error();
        assert_eq!(err.kind(), io::ErrorKind::Interrupted, "flock failed: {err}");
    }
}

/// A POSIX named semaphore with one permit, unlinked on drop.
struct PosixSem {
    sem: *mut libc::sem_t,
    name: CString,
}

impl PosixSem {
    fn create() -> PosixSem {
        let name = CString::new(format!("/latchkey-bench-{}", std::process::id())).unwrap();
        // SAFETY: a valid C string; O_CREAT takes the mode and initial value as varargs.
        let sem = unsafe {
            libc::sem_unlink(name.as_ptr());
            libc::sem_open(name.as_ptr(), libc::O_CREAT | libc::O_EXCL, 0o600 as libc::c_uint, 1 as libc::c_uint)
        };
        assert!(sem != libc::SEM_FAILED, "sem_open failed: {}", io::Error::last_os_error());
        PosixSem { sem, name }
    }

    fn wait(&self) {
        // SAFETY: `sem` is open until drop.
        while unsafe { libc::sem_wait(self.sem) } != 0 {
            let err = io::Error::last_os_error();
            assert_eq!(err.kind(), io::ErrorKind::Interrupted, "sem_wait failed: {err}");
        }
    }

    fn post(&self) {
        // SAFETY: `sem` is open until drop.
        assert_eq!(unsafe { libc::sem_post(self.sem) }, 0, "sem_post failed");
    }
}

impl Drop for PosixSem {
    fn drop(&mut self) {
        // SAFETY: `sem` came from sem_open and is closed once; the name is a C string.
        unsafe {
            libc::sem_close(self.sem);
            libc::sem_unlink(self.name.as_ptr());
        }
    }
}

fn uncontended(emit: &dyn Fn(Row), scope: &Scope, dir: &Path) {
    let case = "host/uncontended/mutex";
    let mutex = scope.mutex("bench/uncontended").unwrap();
    let ours = || per_op(OURS_ITERS, || drop(mutex.lock_blocking().unwrap()));

    let raw = open_lock_file(&dir.join("raw.flock"));
    let flock_pair = || {
        per_op(SYSCALL_ITERS, || {
            flock(&raw, libc::LOCK_EX);
            flock(&raw, libc::LOCK_UN);
        })
    };
    let (o, p) = alternate(ours, flock_pair);
    emit(row(case, o, FLOCK_PEER, p));

    let std_file = open_lock_file(&dir.join("std.lock"));
    let (o, p) = alternate(ours, || {
        per_op(SYSCALL_ITERS, || {
            std_file.lock().unwrap();
            std_file.unlock().unwrap();
        })
    });
    emit(row(case, o, "std::fs::File::lock/unlock", p));

    let fs4_file = open_lock_file(&dir.join("fs4.lock"));
    let (o, p) = alternate(ours, || {
        per_op(SYSCALL_ITERS, || {
            fs4::FileExt::lock(&fs4_file).unwrap();
            fs4::FileExt::unlock(&fs4_file).unwrap();
        })
    });
    emit(row(case, o, "fs4::FileExt::lock/unlock", p));

    let named = named_lock::NamedLock::with_path(dir.join("named-lock.lock")).unwrap();
    let (o, p) = alternate(ours, || per_op(SYSCALL_ITERS, || drop(named.lock().unwrap())));
    emit(row(case, o, "named_lock::NamedLock::lock", p));

    let sem = PosixSem::create();
    let (o, p) = alternate(ours, || {
        per_op(SYSCALL_ITERS, || {
            sem.wait();
            sem.post();
        })
    });
    emit(row(case, o, "posix sem_wait/sem_post (not crash-safe)", p));

    let by_name = || per_op(OURS_ITERS, || drop(scope.lock_blocking("bench/by-name").unwrap()));
    let (o, p) = alternate(by_name, flock_pair);
    emit(row("host/uncontended/by-name", o, FLOCK_PEER, p));
}

/// Which lock a child process uses.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Ours,
    Flock,
}

impl Kind {
    fn arg(self) -> &'static str {
        match self {
            Kind::Ours => "ours",
            Kind::Flock => "flock",
        }
    }

    fn parse(arg: &str) -> Kind {
        match arg {
            "ours" => Kind::Ours,
            "flock" => Kind::Flock,
            other => panic!("unknown lock kind {other:?}"),
        }
    }
}

/// A lock that one process of a hand-off or crash pair holds: the host mutex (with the
/// scope that opened it) or its own open file description of a lock file.
enum ProcLock {
    Ours(latchkey::Mutex),
    Flock(File),
}

impl ProcLock {
    fn open(kind: Kind, scope: &Scope, name: &str, dir: &Path, file: &str) -> ProcLock {
        match kind {
            Kind::Ours => ProcLock::Ours(scope.mutex(name).unwrap()),
            Kind::Flock => ProcLock::Flock(open_lock_file(&dir.join(file))),
        }
    }

    /// Runs `f` under the lock.
    fn with<T>(&self, f: impl FnOnce() -> T) -> T {
        match self {
            ProcLock::Ours(mutex) => {
                let _guard = mutex.lock_blocking().unwrap();
                f()
            }
            ProcLock::Flock(file) => {
                flock(file, libc::LOCK_EX);
                let value = f();
                flock(file, libc::LOCK_UN);
                value
            }
        }
    }
}

/// A page of a file mapped shared: `[count, last holder, holder changes]`, updated
/// only under the hand-off lock (plain loads and stores, so that a grant to two
/// processes at once would lose counts), and the start barrier's count of arrivals.
struct Counter {
    words: *mut AtomicU64,
    _file: File,
}

impl Counter {
    const LEN: usize = 4096;

    fn create(path: &Path) -> Counter {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .expect("cannot create the counter file");
        file.set_len(Counter::LEN as u64).unwrap();
        Counter::map(file)
    }

    fn open(path: &Path) -> Counter {
        Counter::map(OpenOptions::new().read(true).write(true).open(path).expect("cannot open the counter file"))
    }

    fn map(file: File) -> Counter {
        // SAFETY: maps LEN bytes of a file at least LEN bytes long; checked below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                Counter::LEN,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        assert!(ptr != libc::MAP_FAILED, "mmap failed: {}", io::Error::last_os_error());
        Counter { words: ptr.cast(), _file: file }
    }

    fn word(&self, i: usize) -> &AtomicU64 {
        assert!(i < 4);
        // SAFETY: in bounds of the page-aligned mapping, which lives as long as `self`.
        unsafe { &*self.words.add(i) }
    }

    /// One increment by process `me` (1 or 2), under the lock.
    fn bump(&self, me: u64) {
        let count = self.word(0);
        count.store(count.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        if self.word(1).load(Ordering::Relaxed) != me {
            self.word(1).store(me, Ordering::Relaxed);
            let changes = self.word(2);
            changes.store(changes.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        }
    }
}

impl Counter {
    /// Waits, spinning, until both processes have arrived, so that they start together
    /// (a pipe wake-up takes longer than some rounds last). `false` if the other process
    /// has not come within 10 s.
    fn barrier(&self) -> bool {
        let arrivals = self.word(3);
        arrivals.fetch_add(1, Ordering::AcqRel);
        let give_up = Instant::now() + Duration::from_secs(10);
        while arrivals.load(Ordering::Acquire) < 2 {
            if Instant::now() > give_up {
                return false;
            }
            std::hint::spin_loop();
        }
        true
    }
}

impl Drop for Counter {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, unmapped once.
        unsafe { libc::munmap(self.words.cast(), Counter::LEN) };
    }
}

fn spawn_child(args: &[&str]) -> (Child, BufReader<ChildStdout>) {
    let exe = std::env::current_exe().expect("cannot find the compare binary");
    let mut child = Command::new(exe)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("cannot start a child process");
    let out = BufReader::new(child.stdout.take().unwrap());
    (child, out)
}

fn expect_line(out: &mut BufReader<ChildStdout>, expected: &str) {
    let mut line = String::new();
    out.read_line(&mut line).expect("cannot read from the child process");
    assert_eq!(line.trim_end(), expected, "unexpected line from the child process");
}

/// Waits until stdin closes (the parent killed us, or went away).
fn wait_for_eof() {
    let _ = io::stdin().read_to_end(&mut Vec::new());
}

fn say(line: &str) {
    let mut stdout = io::stdout().lock();
    writeln!(stdout, "{line}").and_then(|()| stdout.flush()).expect("cannot write to the parent");
}

fn child_scope(dir: &str) -> Scope {
    Scope::open(&format!("host:{dir}")).expect("cannot open the host scope")
}

/// `__host-handoff-child DIR ITERS KIND CPU`: pins itself to CPU, opens the lock and the
/// counter, says `ready`, meets the parent at the barrier, runs ITERS locked increments,
/// says `done`.
fn handoff_child(args: &[String]) {
    let [dir, iters, kind, cpu] = args else { panic!("usage: {HANDOFF_CHILD} DIR ITERS ours|flock CPU|-") };
    let iters: u64 = iters.parse().expect("ITERS is a number");
    if let Ok(cpu) = cpu.parse() {
        set_affinity(&[cpu]);
    }
    let scope = child_scope(dir);
    let lock = ProcLock::open(Kind::parse(kind), &scope, HANDOFF_NAME, Path::new(dir), HANDOFF_FLOCK);
    let counter = Counter::open(&Path::new(dir).join(HANDOFF_COUNTER));
    say("ready");
    if !counter.barrier() {
        return;
    }
    for _ in 0..iters {
        lock.with(|| counter.bump(2));
    }
    say("done");
}

/// One hand-off round, measured in the parent from the start barrier to the child's
/// `done`.
struct Handoff {
    /// ns per locked increment, over both processes: wall time / 2N.
    per_op: f64,
    /// The share of increments that followed one by the other process.
    change_share: f64,
    /// ns per change of the holding process: wall time / changes.
    per_change: f64,
}

fn handoff_round(kind: Kind, scope: &Scope, dir: &Path, child_cpu: &str) -> Handoff {
    let counter = Counter::create(&dir.join(HANDOFF_COUNTER));
    let dir_arg = dir.to_str().expect("the bench directory is UTF-8");
    let iters = HANDOFF_ITERS.to_string();
    let (mut child, mut out) = spawn_child(&[HANDOFF_CHILD, dir_arg, &iters, kind.arg(), child_cpu]);
    let lock = ProcLock::open(kind, scope, HANDOFF_NAME, dir, HANDOFF_FLOCK);
    expect_line(&mut out, "ready");
    assert!(counter.barrier(), "the hand-off child did not come to the barrier");
    let start = Instant::now();
    for _ in 0..HANDOFF_ITERS {
        lock.with(|| counter.bump(1));
    }
    expect_line(&mut out, "done");
    let elapsed = start.elapsed();
    assert!(child.wait().unwrap().success(), "the hand-off child failed");
    let total = 2 * HANDOFF_ITERS;
    assert_eq!(counter.word(0).load(Ordering::Relaxed), total, "{} lost increments", kind.arg());
    let changes = counter.word(2).load(Ordering::Relaxed);
    let ns = elapsed.as_nanos() as f64;
    Handoff {
        per_op: ns / total as f64,
        change_share: changes as f64 / total as f64,
        per_change: ns / changes.max(1) as f64,
    }
}

fn handoff(emit: &dyn Fn(Row), scope: &Scope, dir: &Path) {
    // One process per core: left to the scheduler, the two sometimes share a core and
    // run one after the other, and nothing is handed off.
    let allowed = affinity();
    let child_cpu = match allowed[..] {
        [parent, child, ..] => {
            set_affinity(&[parent]);
            child.to_string()
        }
        _ => "-".to_string(),
    };
    // Warm-up.
    handoff_round(Kind::Ours, scope, dir, &child_cpu);
    handoff_round(Kind::Flock, scope, dir, &child_cpu);
    let (mut ours, mut peer) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        ours.push(handoff_round(Kind::Ours, scope, dir, &child_cpu));
        peer.push(handoff_round(Kind::Flock, scope, dir, &child_cpu));
    }
    set_affinity(&allowed);
    let med = |v: &[Handoff], f: fn(&Handoff) -> f64| median(v.iter().map(f).collect());
    emit(row("host/handoff/2-processes", med(&ours, |h| h.per_op), FLOCK_PEER, med(&peer, |h| h.per_op)));
    // The same rounds per change of the holding process: a lock that lets its releaser
    // take it again at once (flock) changes hands far less often than a FIFO one.
    let (o, p) = (med(&ours, |h| h.per_change), med(&peer, |h| h.per_change));
    emit(row("host/handoff/2-processes/per-change", o, FLOCK_PEER, p));
    eprintln!(
        "note: host/handoff/2-processes: the lock changed process on {:.1}% of grants (ours), {:.1}% (flock); \
         near 0% means the two processes did not run at the same time",
        med(&ours, |h| h.change_share) * 100.0,
        med(&peer, |h| h.change_share) * 100.0
    );
}

/// `__host-crash-child DIR KIND`: takes the lock, says `held`, and keeps it until killed
/// (or until its stdin closes, should the parent go away).
fn crash_child(args: &[String]) {
    let [dir, kind] = args else { panic!("usage: {CRASH_CHILD} DIR ours|flock") };
    let scope = child_scope(dir);
    let lock = ProcLock::open(Kind::parse(kind), &scope, CRASH_NAME, Path::new(dir), CRASH_FLOCK);
    lock.with(|| {
        say("held");
        wait_for_eof();
    });
}

/// One crash: a child holds the lock, a thread of ours waits for it, the child is
/// killed; the time from just before `kill(2)` to the waiter's grant.
fn crash_round(kind: Kind, scope: &Scope, dir: &Path, settle: Duration) -> Duration {
    let dir_arg = dir.to_str().expect("the bench directory is UTF-8");
    let (mut child, mut out) = spawn_child(&[CRASH_CHILD, dir_arg, kind.arg()]);
    expect_line(&mut out, "held");
    let lock = ProcLock::open(kind, scope, CRASH_NAME, dir, CRASH_FLOCK);
    let (granted_tx, granted_rx) = mpsc::channel();
    let (started_tx, started_rx) = mpsc::channel();
    let latency = std::thread::scope(|s| {
        s.spawn(|| {
            started_tx.send(()).unwrap();
            lock.with(|| granted_tx.send(Instant::now()).unwrap());
        });
        started_rx.recv().unwrap();
        std::thread::sleep(settle);
        assert!(granted_rx.try_recv().is_err(), "the waiter got the lock while the child held it");
        let pid = child.id() as libc::pid_t;
        let killed = Instant::now();
        // SAFETY: a plain system call; `child` has not been waited for, so `pid` is its.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0, "kill failed");
        let granted = granted_rx.recv_timeout(Duration::from_secs(10)).expect("the crash-freed lock was not granted");
        granted.duration_since(killed)
    });
    child.wait().unwrap();
    latency
}

fn crash_release(emit: &dyn Fn(Row), scope: &Scope, dir: &Path) {
    let (mut ours, mut peer) = (Vec::new(), Vec::new());
    for round in 0..CRASH_ROUNDS as u32 {
        let settle = WAITER_SETTLE + KILL_SPREAD * round;
        ours.push(crash_round(Kind::Ours, scope, dir, settle).as_nanos() as f64);
        peer.push(crash_round(Kind::Flock, scope, dir, settle).as_nanos() as f64);
    }
    let max = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    let (ours_max, peer_max) = (max(&ours), max(&peer));
    emit(row("host/crash-release", median(ours), "flock (kernel release)", median(peer)));
    emit(row("host/crash-release/max", ours_max, "flock (kernel release)", peer_max));
}

/// The CPUs this thread may run on.
fn affinity() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is valid; the call fills it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize).filter(|&cpu| libc::CPU_ISSET(cpu, &set)).collect()
    }
}

/// Pins this thread (and the processes it starts from now on) to `cpus`.
fn set_affinity(cpus: &[usize]) {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET keeps to its bounds.
    let result = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &cpu in cpus {
            libc::CPU_SET(cpu, &mut set);
        }
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set)
    };
    assert_eq!(result, 0, "sched_setaffinity failed: {}", io::Error::last_os_error());
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
