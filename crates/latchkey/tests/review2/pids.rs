//! **A waiter watches a stranger that took a dead holder's pid, and sleeps through the
//! death of the process that took the holder's slot.** `watch::open` trusts a pidfd for
//! the pid in a slot's `pid` field once the slot is alive (its liveness lock held) with
//! the same pid after the pidfd was opened. But a newcomer that takes a dead process's
//! slot holds its liveness lock from `try_take`'s first step, and writes its own pid only
//! at the end of the claim, after the scrub (namespace/slots.rs): all that time the slot
//! is alive *with the dead process's pid*. If that pid was reused meanwhile, a waiter
//! that looks then opens a pidfd on the stranger, finds the slot alive with "its" pid,
//! and sleeps with no time limit (`Coverage::Complete`). If the newcomer dies before its
//! scrub released what the dead holder left, nobody wakes the waiter: the lock stays held
//! by the dead, and the waiter sleeps until the stranger exits, or its deadline.
//!
//! Here the dead holder's pid goes to a stranger by `clone3` with `set_tid` (the test
//! runs as root), and the newcomer is stopped (ptrace) right after it took the slot's
//! liveness lock.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use latchkey::Scope;

use super::worker::{kind, read_line, say};
use super::{Dirs, Proc, PATIENCE};
use crate::review::races::Traced;

/// Byte `LIVENESS_OFFSET + slot` is slot `slot`'s liveness lock (see `layout`).
const LIVENESS_OFFSET: i64 = 1 << 40;
/// The queue head of the first name made in a namespace (the first record, after the
/// header page and the first chunk of 8 process slots of 64 bytes, at offset 44).
const FIRST_RECORD_QUEUE: u64 = 4096 + 8 * 64 + 44;
/// How long the waiter waits for `x`.
const WAIT_SECS: u64 = 15;

/// The jobs of this module's workers.
pub fn job(job: &str, url: &str, fields: &[&str]) -> bool {
    match job {
        "wait-for" => {
            let scope = Scope::open(url).unwrap();
            let mutex = scope.mutex(fields[0]).unwrap();
            let said = match mutex.lock_blocking_timeout(Duration::from_secs(WAIT_SECS)) {
                Ok(guard) => format!("token {}", guard.fencing_token()),
                Err(err) => format!("error {}", kind(&err)),
            };
            say(said);
        }
        "open-when-told" => {
            // SAFETY: a plain system call.
            say(format!("tid {}", unsafe { libc::gettid() }));
            let _ = read_line();
            let _scope = Scope::open(url).unwrap();
            say("opened");
            while read_line().is_some() {}
        }
        "open-then-wait-for" => {
            let scope = Scope::open(url).unwrap();
            say("opened");
            let _ = read_line();
            let mutex = scope.mutex(fields[0]).unwrap();
            let said = match mutex.lock_blocking_timeout(Duration::from_secs(WAIT_SECS)) {
                Ok(guard) => format!("token {}", guard.fencing_token()),
                Err(err) => format!("error {}", kind(&err)),
            };
            say(said);
        }
        "wait-release-wait" => {
            let scope = Scope::open(url).unwrap();
            let mutex = scope.mutex(fields[0]).unwrap();
            // SAFETY: a plain system call.
            say(format!("tid {}", unsafe { libc::gettid() }));
            let _ = read_line();
            for _ in 0..2 {
                let said = match mutex.lock_blocking_timeout(Duration::from_secs(WAIT_SECS)) {
                    Ok(guard) => format!("token {}", guard.fencing_token()),
                    Err(err) => format!("error {}", kind(&err)),
                };
                say(said);
                let _ = read_line();
            }
        }
        _ => return false,
    }
    true
}

/// A process of pid `pid` that does nothing until killed (`clone3` with `set_tid`).
struct Stranger(i32);

impl Stranger {
    fn with_pid(pid: i32) -> Stranger {
        #[repr(C)]
        #[derive(Default)]
        struct CloneArgs {
            flags: u64,
            pidfd: u64,
            child_tid: u64,
            parent_tid: u64,
            exit_signal: u64,
            stack: u64,
            stack_size: u64,
            tls: u64,
            set_tid: u64,
            set_tid_size: u64,
            cgroup: u64,
        }
        let tids = [pid];
        let args = CloneArgs {
            exit_signal: libc::SIGCHLD as u64,
            set_tid: tids.as_ptr() as u64,
            set_tid_size: 1,
            ..CloneArgs::default()
        };
        // SAFETY: clone3 as fork; the child makes only async-signal-safe calls.
        let got =
            unsafe { libc::syscall(libc::SYS_clone3, &args as *const CloneArgs, std::mem::size_of::<CloneArgs>()) };
        if got == 0 {
            loop {
                // SAFETY: the child waits to be killed.
                unsafe { libc::pause() };
            }
        }
        assert_eq!(got, i64::from(pid), "clone3 with set_tid {pid}: {}", std::io::Error::last_os_error());
        Stranger(pid)
    }
}

impl Drop for Stranger {
    fn drop(&mut self) {
        // SAFETY: kills and reaps our child.
        unsafe {
            libc::kill(self.0, libc::SIGKILL);
            libc::waitpid(self.0, std::ptr::null_mut(), 0);
        }
    }
}

/// The system call that the thread running the job of worker `pid` is in (its number),
/// if any. Not the main thread's: the test harness runs the job on a thread of its own,
/// and the main thread sleeps in a futex until the job ends; nor latchkey's threads.
fn in_syscall(pid: u32) -> Option<i64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let job = tasks.filter_map(Result::ok).find(|task| {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        task.file_name() != *pid.to_string() && !comm.starts_with("latchkey-")
    })?;
    let text = std::fs::read_to_string(job.path().join("syscall")).ok()?;
    text.split(' ').next()?.trim().parse().ok()
}

/// Whether process `pid` has a pidfd open on process `target`.
fn has_pidfd_on(pid: u32, target: i32) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else { return false };
    fds.filter_map(Result::ok).any(|fd| {
        std::fs::read_to_string(fd.path()).is_ok_and(|info| info.lines().any(|l| l == format!("Pid:\t{target}")))
    })
}

fn until(what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < PATIENCE, "{what} did not happen within {PATIENCE:?}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn a_waiter_trusts_a_stranger_with_the_dead_holders_pid_and_misses_the_newcomers_death() {
    let dirs = Dirs::new("latchkey-review2-pidreuse");
    // The holder takes slot 0 and `x`; the waiter (slot 1) queues for `x` and sleeps.
    let mut holder = Proc::spawn(&["hold", &dirs.url(), "x"]);
    assert!(holder.line("its hold").starts_with("held "));
    let holder_pid = holder.pid() as i32;
    let mut waiter = Proc::spawn(&["wait-for", &dirs.url(), "x"]);
    let file = File::open(dirs.file()).unwrap();
    until("the waiter's request in the queue of x", || {
        let mut word = [0u8; 4];
        file.read_exact_at(&mut word, FIRST_RECORD_QUEUE).unwrap();
        u32::from_le_bytes(word) != 0
    });
    let futexes = [libc::SYS_futex, libc::SYS_futex_waitv];
    until("the waiter's sleep", || in_syscall(waiter.pid()).is_some_and(|nr| futexes.contains(&nr)));
    // SAFETY: stops a worker of ours.
    unsafe { libc::kill(waiter.pid() as i32, libc::SIGSTOP) };
    // The holder dies; a stranger gets its pid.
    holder.kill();
    let _stranger = Stranger::with_pid(holder_pid);
    // A newcomer takes slot 0 (the first free one) and is stopped right after it took
    // the slot's liveness lock: the slot is alive, its pid field still the holder's.
    let mut newcomer = Proc::spawn(&["open-when-told", &dirs.url()]);
    let tid: i32 = newcomer.line("its thread id").strip_prefix("tid ").unwrap().parse().unwrap();
    let traced = Traced::seize(tid);
    assert!(newcomer.tell("go"));
    traced.stop_after(1, |nr, args, peek| {
        nr == libc::SYS_fcntl as u64 && args[1] == libc::F_OFD_SETLK as u64 && peek(args[2] + 8) == LIVENESS_OFFSET
    });
    // The waiter goes on: the holder's death wakes it, it finds slot 0 alive and watches
    // the process with the pid slot 0 names: the stranger.
    // SAFETY: resumes a worker of ours.
    unsafe { libc::kill(waiter.pid() as i32, libc::SIGCONT) };
    // (Watching the stranger is the bug. A waiter that does not checks every 20 ms: asleep
    // a second after it was resumed, it has looked.)
    let resumed = Instant::now();
    until("the waiter's look at slot 0", || {
        let asleep = in_syscall(waiter.pid()).is_some_and(|nr| futexes.contains(&nr));
        has_pidfd_on(waiter.pid(), holder_pid) || (asleep && resumed.elapsed() > Duration::from_secs(1))
    });
    // The newcomer dies before its scrub released the dead holder's hold.
    traced.kill_process(newcomer.pid());
    newcomer.kill();
    let said = waiter.line_within("its lock of x", Duration::from_secs(WAIT_SECS + 30));
    assert!(
        said.starts_with("token "),
        "the holder of x died, and so did the process that took its slot before it released x; the waiter, which \
         watched a stranger that had taken the holder's pid, was never woken: {said}"
    );
}

/// Whether some process holds the liveness lock of `slot` (seen from this process).
fn slot_alive(file: &File, slot: i64) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: a zeroed flock is valid; F_OFD_GETLK fills it in.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = libc::F_WRLCK as _;
    lock.l_whence = libc::SEEK_SET as _;
    lock.l_start = LIVENESS_OFFSET + slot;
    lock.l_len = 1;
    // SAFETY: a plain system call on our descriptor and a local.
    let got = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_GETLK, &mut lock) };
    assert_eq!(got, 0, "F_OFD_GETLK: {}", std::io::Error::last_os_error());
    lock.l_type != libc::F_UNLCK as _
}

/// Review 3: **a grower holds a slot's liveness lock uncounted, and a waiter trusts a
/// stranger with a dead holder's pid meanwhile.** `ProcSlot::claimers` is counted by
/// `try_take` around its lock and pid write, but `grow_slots` takes the liveness lock of
/// slot `seen` (the first slot of the chunk it adds) *before*, and outside, `try_take`:
/// from that lock until `try_take(seen)` counts itself (after the file is grown), the
/// slot is alive with `claimers == 0` and `pid` left as it was. `grow_slots` checks that
/// `header.slots == seen` before the lock, not after, so slot `seen` need not be new:
///
/// 1. slots 0..7 are taken; A, a newcomer, finds none free and calls `grow_slots(8)`,
///    which checks `slots == 8` and is about to lock byte 8 (stopped here by ptrace);
/// 2. B finds none free either, grows the table itself (slots 8..15), takes slot 8 and
///    the mutex `x`; W, in slot 7, queues for `x` and sleeps, watching B;
/// 3. B dies (W is stopped meanwhile, so it does not reclaim `x` at once); a stranger S
///    gets B's pid;
/// 4. A's lock of byte 8 succeeds: slot 8 is alive, `claimers` is 0, `pid` is B's;
/// 5. W looks at slot 8 (`watch::open`): pidfd for B's pid (S), not exited, slot alive,
///    nobody claiming, same pid: it trusts S and sleeps with no time limit;
/// 6. A dies before `try_take(8)`: slot 8 is dead, `x` is held by the dead B, and
///    nobody wakes W until S exits, or W's deadline.
#[test]
fn a_grower_holds_a_used_slots_liveness_lock_uncounted_and_a_waiter_trusts_a_stranger() {
    let dirs = Dirs::new("latchkey-review3-grower");
    // Seven idle processes and the waiter take slots 0..7, the first chunk.
    let mut fillers = Vec::new();
    for _ in 0..7 {
        let mut filler = Proc::spawn(&["open-when-told", &dirs.url()]);
        assert!(filler.line("its thread id").starts_with("tid "));
        assert!(filler.tell("go"));
        assert_eq!(filler.line("that it opened the scope"), "opened");
        fillers.push(filler);
    }
    let mut waiter = Proc::spawn(&["open-then-wait-for", &dirs.url(), "x"]);
    assert_eq!(waiter.line("that it opened the scope"), "opened");
    let file = File::open(dirs.file()).unwrap();
    assert!((0..8).all(|slot| slot_alive(&file, slot)), "slots 0..7 are taken");
    // A finds every slot taken and is stopped in `grow_slots(8)`, about to lock byte 8.
    let mut newcomer = Proc::spawn(&["open-when-told", &dirs.url()]);
    let tid: i32 = newcomer.line("its thread id").strip_prefix("tid ").unwrap().parse().unwrap();
    let traced = Traced::seize(tid);
    assert!(newcomer.tell("go"));
    let grow_lock_of_slot_8 = |nr: u64, args: &[u64], peek: &dyn Fn(u64) -> i64| {
        nr == libc::SYS_fcntl as u64 && args[1] == libc::F_OFD_SETLK as u64 && peek(args[2] + 8) == LIVENESS_OFFSET + 8
    };
    traced.stop_before(1, grow_lock_of_slot_8);
    // B grows the table meanwhile, takes slot 8, and `x`.
    let mut holder = Proc::spawn(&["hold", &dirs.url(), "x"]);
    assert!(holder.line("its hold").starts_with("held "));
    assert!(slot_alive(&file, 8), "the holder took slot 8");
    let holder_pid = holder.pid() as i32;
    // W queues for `x` and sleeps.
    assert!(waiter.tell("go"));
    until("the waiter's request in the queue of x", || {
        let mut word = [0u8; 4];
        file.read_exact_at(&mut word, FIRST_RECORD_QUEUE).unwrap();
        u32::from_le_bytes(word) != 0
    });
    let futexes = [libc::SYS_futex, libc::SYS_futex_waitv];
    until("the waiter's sleep", || in_syscall(waiter.pid()).is_some_and(|nr| futexes.contains(&nr)));
    // SAFETY: stops a worker of ours.
    unsafe { libc::kill(waiter.pid() as i32, libc::SIGSTOP) };
    // B dies; a stranger gets its pid.
    holder.kill();
    assert!(!slot_alive(&file, 8), "the holder's slot died with it");
    let _stranger = Stranger::with_pid(holder_pid);
    // A's lock of byte 8 goes through: slot 8 alive, nobody counted as claiming it, its
    // pid field B's.
    traced.finish_call();
    assert!(slot_alive(&file, 8), "the grower took slot 8's liveness lock");
    // SAFETY: resumes a worker of ours.
    unsafe { libc::kill(waiter.pid() as i32, libc::SIGCONT) };
    let resumed = Instant::now();
    until("the waiter's look at slot 8", || {
        let asleep = in_syscall(waiter.pid()).is_some_and(|nr| futexes.contains(&nr));
        has_pidfd_on(waiter.pid(), holder_pid) || (asleep && resumed.elapsed() > Duration::from_secs(1))
    });
    let trusted = has_pidfd_on(waiter.pid(), holder_pid);
    // A dies before it took slot 8 as `try_take` does.
    traced.kill_process(newcomer.pid());
    newcomer.kill();
    let said = waiter.line_within("its lock of x", Duration::from_secs(WAIT_SECS + 30));
    assert!(
        said.starts_with("token "),
        "the holder of x died, and so did a grower that had locked its slot (not counted as claiming it); the \
         waiter, which watched a stranger that had taken the holder's pid (a pidfd on it: {trusted}), was never woken: {said}"
    );
    drop(fillers);
}

/// The `u32` at `offset` in the namespace file.
fn word_at(file: &File, offset: u64) -> u32 {
    let mut word = [0u8; 4];
    file.read_exact_at(&mut word, offset).unwrap();
    u32::from_le_bytes(word)
}

/// Review 3: **a waiter trusts a stranger with a dead holder's pid when a process of
/// another pid namespace, with the same pid there, takes the holder's slot.**
/// `watch::open` checks that the slot's process shares our pid namespace *before* it
/// opens the pidfd, and afterwards checks only that the slot is alive, that nobody is
/// claiming it, and that `pid` is unchanged: not `pid_ns`. A newcomer from another pid
/// namespace (a container sharing the directory) whose pid there is numerically the dead
/// holder's passes all three:
///
/// 1. D (slot 0, pid P) holds `z`; W (slot 1) queues for `z` and watches D;
/// 2. D dies; a stranger S gets pid P in our namespace; W, woken, looks at slot 0
///    (`watch::open`): `pid` is P, `pid_ns` ours, and it opens a pidfd for P: S's (W is
///    stopped right after, by ptrace);
/// 3. N, in another pid namespace where its pid is P too, takes slot 0: it writes
///    `pid_ns` (its own) and `pid` (P), and its scrub hands `z` over to W;
/// 4. W goes on: S not exited, slot 0 alive, no claimer, `pid` P: it trusts S as slot
///    0's process, and keeps it so (the next `cover` compares only `pid`);
/// 5. W releases `z`, N takes it, W queues for it again and sleeps with no time limit,
///    watching S; N dies holding `z`, and nothing wakes W before its deadline.
#[test]
fn a_waiter_trusts_a_stranger_when_a_process_of_another_pid_namespace_with_the_same_pid_takes_the_slot() {
    let dirs = Dirs::new("latchkey-review3-pidns");
    let mut holder = Proc::spawn(&["hold", &dirs.url(), "z"]);
    assert!(holder.line("its hold").starts_with("held "));
    let holder_pid = holder.pid() as i32;
    let file = File::open(dirs.file()).unwrap();
    let our_pid_ns = word_at(&file, 4096 + 4);
    let mut waiter = Proc::spawn(&["wait-release-wait", &dirs.url(), "z"]);
    let tid: i32 = waiter.line("its thread id").strip_prefix("tid ").unwrap().parse().unwrap();
    // The waiter's thread is traced by a thread of ours, and stopped right after its
    // second pidfd_open (the first is for D, the second for slot 0 once D died).
    let (to_test, from_tracer) = std::sync::mpsc::channel::<&str>();
    let (to_tracer, from_test) = std::sync::mpsc::channel::<()>();
    let tracer = std::thread::spawn(move || {
        let traced = Traced::seize(tid);
        to_test.send("seized").unwrap();
        traced.stop_before(2, |nr, _, _| nr == libc::SYS_pidfd_open as u64);
        to_test.send("at entry").unwrap();
        let _ = from_test.recv();
        traced.finish_call();
        to_test.send("stopped").unwrap();
        let _ = from_test.recv();
        drop(traced);
    });
    assert_eq!(from_tracer.recv_timeout(PATIENCE).unwrap(), "seized");
    assert!(waiter.tell("go"));
    until("the waiter's request in the queue of z", || word_at(&file, FIRST_RECORD_QUEUE) != 0);
    until("the waiter's watch of the holder", || has_pidfd_on(waiter.pid(), holder_pid));
    let futexes = [libc::SYS_futex, libc::SYS_futex_waitv];
    until("the waiter's sleep", || in_syscall(waiter.pid()).is_some_and(|nr| futexes.contains(&nr)));
    // D dies; the waiter, woken, is about to open a pidfd for its pid; a stranger gets
    // the pid first, and the waiter opens a pidfd on it.
    holder.kill();
    assert_eq!(from_tracer.recv_timeout(PATIENCE).unwrap(), "at entry");
    let _stranger = Stranger::with_pid(holder_pid);
    to_tracer.send(()).unwrap();
    assert_eq!(from_tracer.recv_timeout(PATIENCE).unwrap(), "stopped");
    assert!(has_pidfd_on(waiter.pid(), holder_pid), "the waiter opened a pidfd on the stranger");
    // N, pid P in a pid namespace of its own, takes slot 0.
    let mut command = std::process::Command::new("unshare");
    let exe = std::env::current_exe().unwrap();
    let script = format!(
        "exec 3<&0; echo {} > /proc/sys/kernel/ns_last_pid; '{}' {} <&3 3<&- & wait",
        holder_pid - 1,
        exe.display(),
        Proc::WORKER_ARGS.join(" ")
    );
    command.args(["--pid", "--fork", "--mount-proc", "--kill-child", "sh", "-c", &script]);
    let mut newcomer = Proc::spawn_command(command, &["hold", &dirs.url(), "z"]);
    until("the newcomer's claim of slot 0", || {
        slot_alive(&file, 0) && word_at(&file, 4096 + 32) == 0 && word_at(&file, 4096 + 4) != our_pid_ns
    });
    assert_eq!(word_at(&file, 4096) as i32, holder_pid, "the newcomer's pid, in its namespace, is the holder's");
    // The waiter goes on: it trusts S, and is granted `z` (handed over by N's scrub).
    to_tracer.send(()).unwrap();
    tracer.join().unwrap();
    assert!(waiter.line("its first lock of z").starts_with("token "));
    // It releases `z`; N takes it; the waiter queues again.
    assert!(waiter.tell("release"));
    assert!(newcomer.line("its hold").starts_with("held "));
    assert!(waiter.tell("again"));
    until("the waiter's second sleep", || in_syscall(waiter.pid()).is_some_and(|nr| futexes.contains(&nr)));
    std::thread::sleep(Duration::from_millis(200));
    let trusted = has_pidfd_on(waiter.pid(), holder_pid);
    // N dies holding `z`.
    newcomer.kill();
    until("the newcomer's death", || !slot_alive(&file, 0));
    let said = waiter.line_within("its second lock of z", Duration::from_secs(WAIT_SECS + 30));
    assert!(
        said.starts_with("token "),
        "the holder of z, a process of another pid namespace whose pid there was a dead holder's, died; the waiter, \
         which watched a stranger that had taken the dead holder's pid in ours (a pidfd on it: {trusted}), was never \
         woken: {said}"
    );
}
