//! Interleavings between processes that a test cannot reach by timing, forced by
//! stopping one thread of a worker at a chosen system call with ptrace (the test runs as
//! root, or as a parent of its workers under Yama's default policy).
//!
//! **A newcomer that takes a dead process's slot while another process repairs what the
//! dead one left fails to open the namespace.** `Namespace::scrub` (namespace/slots.rs)
//! reads the state of each entry the dead owner left, *then* takes the entry's record
//! lock and releases, withdraws or closes it as that state said. A process that judged
//! the slot dead before the newcomer took it, and is freeing the same entries under the
//! record lock (`Locked::repair`, `repair::rebuild`), frees them in between; the
//! newcomer's `close_user` (or `release`, `withdraw`) then finds a free entry and fails
//! with `Corrupted`, and so does its `Scope::open`. A crashed worker restarted at once by
//! its supervisor, while the dead worker's waiters repair, is exactly this.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use latchkey::Scope;

use super::worker::{kind, read_line, say};
use super::{Dirs, Proc, PATIENCE};

/// Byte `LIVENESS_OFFSET + slot` is slot `slot`'s liveness lock (see `layout`).
const LIVENESS_OFFSET: i64 = 1 << 40;
/// The record lock word of the first name made in a namespace: the first record
/// (after the header page and the first chunk of 8 process slots of 64 bytes), at
/// offset 24 of the record.
const FIRST_RECORD_LOCK: u64 = 4096 + 8 * 64 + 24;
/// The bit a contender sets in a lock word before it sleeps on it.
const LOCK_CONTENDED: u32 = 1 << 31;

/// The jobs of this module's workers.
pub fn job(job: &str, url: &str, fields: &[&str]) {
    match job {
        "hold-forever" => {
            let scope = Scope::open(url).unwrap();
            let mutex = scope.mutex(fields[0]).unwrap();
            let guard = mutex.lock_blocking().unwrap();
            say(format!("held {}", guard.fencing_token()));
            while read_line().is_some() {}
        }
        "try-when-told" => {
            let scope = Scope::open(url).unwrap();
            let mutex = scope.mutex(fields[0]).unwrap();
            // SAFETY: a plain system call.
            say(format!("tid {}", unsafe { libc::gettid() }));
            let _ = read_line();
            match mutex.try_lock() {
                Ok(Some(guard)) => say(format!("took {}", guard.fencing_token())),
                Ok(None) => say("busy"),
                Err(err) => say(format!("error {}", kind(&err))),
            }
            while read_line().is_some() {}
        }
        "write-release-when-told" => {
            let scope = Scope::open(url).unwrap();
            let rwlock = scope.rwlock(fields[0]).unwrap();
            let guard = rwlock.write_blocking().unwrap();
            // SAFETY: a plain system call.
            say(format!("tid {}", unsafe { libc::gettid() }));
            let _ = read_line();
            let released = guard.release();
            say(format!("released {released:?}"));
            while read_line().is_some() {}
        }
        "read-and-hold" => {
            let scope = Scope::open(url).unwrap();
            let rwlock = scope.rwlock(fields[0]).unwrap();
            match rwlock.read_blocking() {
                Ok(guard) => {
                    say(format!("read {}", guard.fencing_token()));
                    while read_line().is_some() {}
                }
                Err(err) => say(format!("error {}", kind(&err))),
            };
        }
        "inspect-when-told" => {
            let scope = Scope::open(url).unwrap();
            say("ready");
            let _ = read_line();
            match scope.inspect(fields[0]) {
                Ok(state) => say(format!("inspected {} in use", state.in_use)),
                Err(err) => say(format!("error {}", kind(&err))),
            }
            while read_line().is_some() {}
        }
        "open" => match Scope::open(url) {
            Ok(_scope) => {
                say("opened");
                while read_line().is_some() {}
            }
            Err(err) => say(format!("open-error {}", kind(&err))),
        },
        other => panic!("unknown worker job {other:?}"),
    }
}

/// One thread of another process, traced (`PTRACE_SEIZE`) by the calling thread, which
/// must make every later call. Detached (and so resumed) when dropped.
pub struct Traced {
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
    /// Entry: the call's number, then its six arguments.
    data: [u64; 8],
}

const SYSCALL_INFO_ENTRY: u8 = 1;
const PTRACE_EVENT_STOP: i32 = 128;

impl Traced {
    /// Seizes thread `tid` and stops it.
    pub fn seize(tid: i32) -> Traced {
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

    /// Waits for the thread's next stop (at most `PATIENCE`); returns its status.
    fn wait_stop(&self) -> i32 {
        let start = Instant::now();
        loop {
            let mut status = 0;
            // SAFETY: waiting for a traced thread, into a local.
            let pid = unsafe { libc::waitpid(self.tid, &mut status, libc::__WALL | libc::WNOHANG) };
            assert!(pid >= 0, "waitpid({}): {}", self.tid, std::io::Error::last_os_error());
            if pid == self.tid {
                assert!(libc::WIFSTOPPED(status), "the traced thread {} ended: status {status:#x}", self.tid);
                return status;
            }
            assert!(start.elapsed() < PATIENCE, "the traced thread {} did not stop within {PATIENCE:?}", self.tid);
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// Runs the thread until it returns from the `nth` system call (from 1) whose entry
    /// `matches` (its number and arguments, and a reader of its memory), and leaves it
    /// stopped there.
    pub fn stop_after(&self, nth: usize, matches: impl FnMut(u64, &[u64], &dyn Fn(u64) -> i64) -> bool) {
        self.stop_at(nth, false, matches)
    }

    /// Runs the thread until it enters the `nth` system call (from 1) that `matches`, and
    /// leaves it stopped there, before the call is made.
    pub fn stop_before(&self, nth: usize, matches: impl FnMut(u64, &[u64], &dyn Fn(u64) -> i64) -> bool) {
        self.stop_at(nth, true, matches)
    }

    fn stop_at(&self, nth: usize, at_entry: bool, mut matches: impl FnMut(u64, &[u64], &dyn Fn(u64) -> i64) -> bool) {
        let mut seen = 0;
        let mut at_match = false;
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
                if info.op == SYSCALL_INFO_ENTRY {
                    let tid = self.tid;
                    // SAFETY: reads a word of the traced thread's memory.
                    let peek =
                        move |addr: u64| unsafe { libc::ptrace(libc::PTRACE_PEEKDATA, tid, addr as usize, 0usize) };
                    at_match = matches(info.data[0], &info.data[1..7], &peek);
                    if at_match && at_entry {
                        seen += 1;
                        if seen == nth {
                            return;
                        }
                        at_match = false;
                    }
                } else if std::mem::take(&mut at_match) {
                    seen += 1;
                    if seen == nth {
                        return;
                    }
                }
            } else if status >> 16 != PTRACE_EVENT_STOP && stop != libc::SIGTRAP {
                signal = stop; // a signal for the thread: deliver it
            }
        }
    }
}

impl Traced {
    /// Lets a thread stopped at a system call's entry (by [`Traced::stop_before`]) make
    /// the call, and leaves it stopped at its return.
    pub fn finish_call(&self) {
        // SAFETY: resumes the stopped, traced thread until its next system call stop.
        unsafe { libc::ptrace(libc::PTRACE_SYSCALL, self.tid, 0usize, 0usize) };
        let status = self.wait_stop();
        assert_eq!(libc::WSTOPSIG(status), libc::SIGTRAP | 0x80, "the traced thread {} did not return", self.tid);
    }

    /// SIGKILLs the traced thread's process (`pid`) where the thread stopped, and reaps
    /// the thread as its tracer.
    pub fn kill_process(self, pid: u32) {
        // SAFETY: signals a worker of ours, then reaps the traced thread.
        unsafe {
            libc::kill(pid as i32, libc::SIGKILL);
            let mut status = 0;
            while libc::waitpid(self.tid, &mut status, libc::__WALL) == self.tid && libc::WIFSTOPPED(status) {
                libc::ptrace(libc::PTRACE_CONT, self.tid, 0usize, 0usize);
            }
        }
        std::mem::forget(self);
    }
}

impl Drop for Traced {
    fn drop(&mut self) {
        // SAFETY: detaches the thread, which goes on where it stopped.
        unsafe { libc::ptrace(libc::PTRACE_DETACH, self.tid, 0usize, 0usize) };
    }
}

/// Whether a system call's entry is `fcntl(_, F_OFD_GETLK, lock)` for the liveness byte
/// of `slot`: the check "is the process in `slot` alive?".
fn is_liveness_check(slot: i64) -> impl FnMut(u64, &[u64], &dyn Fn(u64) -> i64) -> bool {
    move |nr, args, peek| {
        nr == libc::SYS_fcntl as u64
            && args[1] == libc::F_OFD_GETLK as u64
            && peek(args[2] + 8) == LIVENESS_OFFSET + slot
    }
}

#[test]
fn a_process_that_takes_a_dead_slot_during_a_repair_of_it_fails_to_open() {
    let dirs = Dirs::new("latchkey-review-scrub");
    // The holder takes slot 0 (it makes the namespace) and holds `x`, the first record.
    let mut holder = Proc::spawn(&["hold-forever", &dirs.url(), "x"]);
    assert!(holder.line("its hold").starts_with("held "));
    // The repairer takes slot 1.
    let mut repairer = Proc::spawn(&["try-when-told", &dirs.url(), "x"]);
    let tid: i32 = repairer.line("its thread id").strip_prefix("tid ").unwrap().parse().unwrap();
    holder.kill();
    // The repairer's try_lock finds `x` held by the dead holder and repairs it: it checks
    // slot 0 once to see that it must (`has_dead`), and once more in `repair`, then frees
    // the holder's entries. It is stopped right after that second check, holding the
    // record lock of `x`.
    let traced = Traced::seize(tid);
    assert!(repairer.tell("go"));
    traced.stop_after(2, is_liveness_check(0));
    // A newcomer takes slot 0, the first it finds free, and scrubs the dead holder's
    // entries: it reads the first one's state (open), and waits for the record lock.
    let mut newcomer = Proc::spawn(&["open", &dirs.url()]);
    let file = std::fs::File::open(dirs.file()).unwrap();
    let contended = super::eventually(|| {
        let mut word = [0u8; 4];
        file.read_exact_at(&mut word, FIRST_RECORD_LOCK).unwrap();
        u32::from_le_bytes(word) & LOCK_CONTENDED != 0
    });
    assert!(contended, "the newcomer did not come to wait for the record lock of x");
    // The repairer goes on: it frees the dead holder's hold and open entry, and lets go.
    drop(traced);
    let said = newcomer.line("whether it could open the namespace");
    assert_eq!(
        said, "opened",
        "a process that took the slot of a dead process while another process repaired what the dead one left \
         could not open the namespace"
    );
    let took = repairer.line("its try_lock");
    assert!(took.starts_with("took "), "the repairer could not take x: {took}");
}

/// The record lock word of the first name made in the namespace file.
/// The owner's slot + 1 in the first record's lock word (its low 20 bits: the word also
/// holds the owner's incarnation and the contended bit).
fn first_record_lock(file: &File) -> u32 {
    let mut word = [0u8; 4];
    file.read_exact_at(&mut word, FIRST_RECORD_LOCK).unwrap();
    u32::from_le_bytes(word) & ((1 << 20) - 1)
}

/// **A contender takes a record lock away from a live process.** `lock_contended`
/// (protocol/lock.rs) reads the lock word (`current`, naming slot `s`), finds slot `s`
/// dead, and then takes the lock with `compare_exchange(current, me | CONTENDED)`. If,
/// between its check and its swap, the dead owner's lock was taken over and let go by
/// another process, and a new process claimed slot `s` and took the lock, the word is
/// `s + 1` again (ABA) and the swap succeeds: two processes are inside the record lock,
/// and the second one rebuilds the record under the first one's feet (invariant 6 of
/// `protocol` says a slot reused meanwhile is never taken for the dead one). Here the
/// contender is stopped (ptrace) between its liveness check and its swap while that
/// happens; the test then checks that it cannot finish its `try_lock` (which needs the
/// record lock) while the new process is stopped inside the record lock.
#[test]
fn a_contender_that_found_the_owner_dead_takes_the_lock_from_the_new_process_in_its_slot() {
    let dirs = Dirs::new("latchkey-review-aba");
    // Slot 0 holds `x` (the first record), throughout.
    let mut holder = Proc::spawn(&["hold-forever", &dirs.url(), "x"]);
    assert!(holder.line("its hold").starts_with("held "));
    // Slot 1 dies inside the record lock of `x`; slot 2 contends for it; slot 3 takes it
    // over.
    let mut dying = Proc::spawn(&["try-when-told", &dirs.url(), "x"]);
    let dying_tid: i32 = dying.line("its thread id").strip_prefix("tid ").unwrap().parse().unwrap();
    let mut contender = Proc::spawn(&["try-when-told", &dirs.url(), "x"]);
    let contender_tid: i32 = contender.line("its thread id").strip_prefix("tid ").unwrap().parse().unwrap();
    let mut taker = Proc::spawn(&["inspect-when-told", &dirs.url(), "x"]);
    assert_eq!(taker.line("that it opened the namespace"), "ready");
    let file = File::open(dirs.file()).unwrap();

    // Slot 1's try_lock finds `x` held and, inside the record lock, checks whether its
    // holder (slot 0) is alive: it is killed there.
    let traced = Traced::seize(dying_tid);
    assert!(dying.tell("go"));
    traced.stop_after(1, is_liveness_check(0));
    assert_eq!(first_record_lock(&file), 2, "slot 1 holds the record lock of x");
    traced.kill_process(dying.pid());
    dying.kill();

    // Slot 2 contends: it reads the word (slot 1), checks slot 1, finds it dead, and is
    // stopped right there, before its compare-and-swap.
    let contender_traced = Traced::seize(contender_tid);
    assert!(contender.tell("go"));
    contender_traced.stop_after(1, is_liveness_check(1));

    // Slot 3 takes the lock over from the dead slot 1, repairs, and lets it go.
    assert!(taker.tell("go"));
    assert!(taker.line("its inspect").starts_with("inspected "));
    assert_eq!(first_record_lock(&file), 0, "the record lock of x is free again");

    // A new process claims slot 1 (the first free one), and its try_lock takes the record
    // lock of `x` (the word names slot 1 again) and is stopped inside it, checking
    // whether the holder of `x` is alive.
    let mut newcomer = Proc::spawn(&["try-when-told", &dirs.url(), "x"]);
    let newcomer_tid: i32 = newcomer.line("its thread id").strip_prefix("tid ").unwrap().parse().unwrap();
    let newcomer_traced = Traced::seize(newcomer_tid);
    assert!(newcomer.tell("go"));
    newcomer_traced.stop_after(1, is_liveness_check(0));
    assert_eq!(first_record_lock(&file), 2, "the newcomer, in slot 1, holds the record lock of x");

    // Slot 2 goes on: it must wait for the record lock, which a live process holds.
    drop(contender_traced);
    let finished = contender.line_if_any(Duration::from_secs(5));
    drop(newcomer_traced);
    if let Some(said) = finished {
        panic!(
            "while a live process (the newcomer in slot 1) was inside the record lock of x, another process took the \
             record lock (it had found slot 1's previous owner dead) and finished its try_lock ({said:?}): two \
             processes were inside one record lock"
        );
    }
}
