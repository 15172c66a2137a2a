//! Review: interleavings reached by stopping a thread (ptrace) at a crash point, where the
//! `crash-points` feature makes a system call (`raise(SIGKILL)`, skipped here so the
//! thread goes on). The test runs as root, or as the parent of its workers.
//!
//! **Two threads that add an arena chunk at once lose one of them.** `Namespace::take_entry`
//! (namespace/arena.rs) calls `add_chunk` outside any lock when its free list is empty,
//! and `add_chunk` links its chunk with a load and a store of the slot's `arena` (the
//! `header.next = slot.arena; slot.arena = chunk` of a list push, not a compare-and-swap).
//! Two threads that both ran out of entries interleave there, and the chunk of one is left
//! out of the arena. Its entries are still in use, as holds and open names, but nothing
//! finds them through the arena any more: `repair::rebuild`, which recounts a record from
//! the arenas after a process died inside its lock, drops those holds, and the lock is
//! granted a second time.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::Arc;
use std::time::{Duration, Instant};

use latchkey_host::HostScope;
use latchkey_model::RawScope;

const PATIENCE: Duration = Duration::from_secs(20);

/// The worker of this module's tests: a role, in `LATCHKEY_REVIEW_ROLE`.
#[test]
fn review_role() {
    let Ok(role) = std::env::var("LATCHKEY_REVIEW_ROLE") else { return };
    let dir = PathBuf::from(std::env::var_os("LATCHKEY_CRASH_DIR").unwrap());
    let scope = Arc::new(HostScope::open(Some(&dir)).unwrap());
    match role.as_str() {
        "two-threads" => two_threads(scope),
        "open-x" => {
            let _ = scope.open("x", 1); // dies inside, at "open/open.committed"
            say("alive");
        }
        "try-x" => {
            let lock = scope.open_once("x", 1).unwrap();
            match lock.try_acquire(1) {
                Ok(Some(lease)) => say(&format!("took {}", lease.token())),
                Ok(None) => say("busy"),
                Err(e) => say(&format!("error {e}")),
            }
        }
        other => panic!("unknown role {other}"),
    }
}

fn say(line: &str) {
    println!("@@ {line}");
    std::io::stdout().flush().unwrap();
}

/// Thread 1 says its id; on `go1` it takes `a` (its first entry: it adds the arena's
/// first chunk) and says `took a`. On `go2`, thread 2 opens `x` and takes it (its entries:
/// another chunk), says `held x`, and keeps it.
fn two_threads(scope: Arc<HostScope>) {
    let (go1, wait1) = mpsc::channel::<()>();
    let (go2, wait2) = mpsc::channel::<()>();
    let first = {
        let scope = scope.clone();
        std::thread::spawn(move || {
            // SAFETY: a plain system call.
            say(&format!("tid {}", unsafe { libc::gettid() }));
            wait1.recv().unwrap();
            let lock = scope.open_once("a", 1).unwrap();
            let lease = lock.try_acquire(1).unwrap();
            say(&format!("took a: {}", lease.is_some()));
        })
    };
    let second = std::thread::spawn(move || {
        wait2.recv().unwrap();
        let x = scope.open("x", 1).unwrap();
        let lease = x.acquire_blocking(1, None).unwrap();
        say(&format!("held x {}", lease.token()));
        std::thread::sleep(Duration::from_secs(600));
    });
    let stdin = std::io::stdin();
    for line in stdin.lock().lines().map_while(Result::ok) {
        match line.as_str() {
            "go1" => go1.send(()).unwrap(),
            "go2" => go2.send(()).unwrap(),
            _ => {}
        }
    }
    let _ = (first.join(), second.join());
}

/// A worker, killed and reaped when dropped.
struct Worker {
    child: Child,
    lines: Receiver<String>,
}

impl Worker {
    fn start(dir: &Path, role: &str, crash_at: Option<&str>) -> Worker {
        let mut command = Command::new(std::env::current_exe().unwrap());
        command
            .args(["--exact", "review::review_role", "--nocapture", "--test-threads=1"])
            .env("LATCHKEY_REVIEW_ROLE", role)
            .env("LATCHKEY_CRASH_DIR", dir)
            .env_remove("LATCHKEY_CRASH_AT")
            .env_remove("LATCHKEY_CRASH_SURVEY")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(point) = crash_at {
            command.env("LATCHKEY_CRASH_AT", point);
        }
        let mut child = command.spawn().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                if let Some((_, said)) = line.split_once("@@ ") {
                    if send.send(said.to_string()).is_err() {
                        return;
                    }
                }
            }
        });
        Worker { child, lines }
    }

    #[track_caller]
    fn line(&mut self, what: &str) -> String {
        self.lines.recv_timeout(PATIENCE).unwrap_or_else(|_| panic!("no {what} within {PATIENCE:?}"))
    }

    fn tell(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    fn wait_for_end(&mut self) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(start.elapsed() < PATIENCE, "a worker did not end");
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One thread of another process, traced by the calling thread; detached when dropped.
struct Traced {
    tid: i32,
}

/// `struct ptrace_syscall_info` (Linux 5.3).
#[repr(C)]
#[derive(Default)]
struct SyscallInfo {
    op: u8,
    _pad: [u8; 3],
    _arch: u32,
    _ip: u64,
    _sp: u64,
    data: [u64; 8],
}

impl Traced {
    fn seize(tid: i32) -> Traced {
        // SAFETY: ptrace requests on a thread id; no memory of ours is passed.
        unsafe {
            let seized = libc::ptrace(libc::PTRACE_SEIZE, tid, 0usize, libc::PTRACE_O_TRACESYSGOOD as usize);
            assert_eq!(seized, 0, "PTRACE_SEIZE of {tid}: {}", std::io::Error::last_os_error());
            assert_eq!(libc::ptrace(libc::PTRACE_INTERRUPT, tid, 0usize, 0usize), 0);
        }
        let traced = Traced { tid };
        traced.wait_stop();
        traced
    }

    fn wait_stop(&self) -> i32 {
        let start = Instant::now();
        loop {
            let mut status = 0;
            // SAFETY: waiting for a traced thread, into a local.
            let pid = unsafe { libc::waitpid(self.tid, &mut status, libc::__WALL | libc::WNOHANG) };
            assert!(pid >= 0, "waitpid: {}", std::io::Error::last_os_error());
            if pid == self.tid {
                assert!(libc::WIFSTOPPED(status), "the traced thread ended: {status:#x}");
                return status;
            }
            assert!(start.elapsed() < PATIENCE, "the traced thread did not stop");
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// Runs the thread until it enters a system call numbered `nr`, and leaves it there.
    fn stop_before(&self, nr: i64) {
        let mut signal = 0;
        loop {
            // SAFETY: resumes the stopped, traced thread until its next system call stop.
            unsafe { libc::ptrace(libc::PTRACE_SYSCALL, self.tid, 0usize, signal as usize) };
            signal = 0;
            let status = self.wait_stop();
            let stop = libc::WSTOPSIG(status);
            if stop == libc::SIGTRAP | 0x80 {
                let mut info = SyscallInfo::default();
                // SAFETY: the kernel writes at most `size_of::<SyscallInfo>()` bytes into `info`.
                unsafe {
                    libc::ptrace(
                        libc::PTRACE_GET_SYSCALL_INFO,
                        self.tid,
                        std::mem::size_of::<SyscallInfo>(),
                        &mut info as *mut SyscallInfo,
                    )
                };
                if info.op == 1 && info.data[0] == nr as u64 {
                    return;
                }
            } else if status >> 16 != 128 && stop != libc::SIGTRAP {
                signal = stop;
            }
        }
    }

    /// At a system call's entry: makes the kernel skip it (it returns `-ENOSYS`).
    fn skip_syscall(&self) {
        // SAFETY: reads and writes the stopped thread's registers through a local struct.
        unsafe {
            let mut regs: libc::user_regs_struct = std::mem::zeroed();
            assert_eq!(libc::ptrace(libc::PTRACE_GETREGS, self.tid, 0usize, &mut regs as *mut _), 0);
            regs.orig_rax = u64::MAX;
            assert_eq!(libc::ptrace(libc::PTRACE_SETREGS, self.tid, 0usize, &regs as *const _), 0);
        }
    }
}

impl Drop for Traced {
    fn drop(&mut self) {
        // SAFETY: detaches the thread, which goes on where it stopped.
        unsafe { libc::ptrace(libc::PTRACE_DETACH, self.tid, 0usize, 0usize) };
    }
}

#[test]
fn a_chunk_added_by_two_threads_at_once_is_lost_and_a_rebuild_grants_its_hold_again() {
    let dir = std::env::temp_dir().join(format!("latchkey-review-arena-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    // Thread 1 of the worker stops at its first "arena/arena.chunk_linked", between its
    // load of the slot's arena and its store (the crash point's raise(SIGKILL) is where
    // it stops; the raise is skipped).
    let mut worker = Worker::start(&dir, "two-threads", Some("arena/arena.chunk_linked"));
    let tid: i32 = worker.line("thread 1's id").strip_prefix("tid ").unwrap().parse().unwrap();
    let traced = Traced::seize(tid);
    worker.tell("go1");
    traced.stop_before(libc::SYS_tgkill);
    traced.skip_syscall();
    // Thread 2 needs an entry meanwhile, and takes `x` with it (before the fix it added a
    // chunk of its own at once; now it waits for thread 1's chunk, so both orders of the
    // two lines below are allowed).
    worker.tell("go2");
    // Thread 1 goes on, and links its chunk (before the fix: over thread 2's).
    drop(traced);
    let mut said = [worker.line("thread 1's grant of a or thread 2's hold of x"), worker.line("the other")];
    said.sort();
    assert_eq!(said[1], "took a: true");
    assert!(said[0].starts_with("held x "), "{said:?}");

    // A process dies inside the record lock of `x` (opening it).
    let mut ghost = Worker::start(&dir, "open-x", Some("open/open.committed"));
    let status = ghost.wait_for_end();
    assert!(!status.success(), "the ghost did not die inside the record lock of x: {status}");
    // The next process to take that lock takes it over, and rebuilds the record from the
    // arenas of the live processes.
    let mut other = Worker::start(&dir, "try-x", None);
    let said = other.line("whether it could take x");
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        said, "busy",
        "a live thread holds x, yet another process was granted x after a rebuild of its record: the hold's entry is \
         in an arena chunk that was lost when two threads added chunks at once"
    );
}
