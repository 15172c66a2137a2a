//! The command's process tree, kept under the lock: every process the command starts
//! runs in one process group, which `run` waits for to the last member, and which dies
//! when `run` dies, however it dies.
//!
//! - **The group.** A guardian process (below) leads a new process group; the command
//!   joins it, and so does everything it starts (unless a process leaves it on purpose,
//!   with `setsid` or `setpgid`: such a process is outside latchkey's reach, as a daemon
//!   that closes its descriptors is outside flock's).
//! - **Waiting.** `run` is a child subreaper (`PR_SET_CHILD_SUBREAPER`): a background
//!   process whose parent ended becomes its child, so it can wait for every member of the
//!   group, not only the command.
//! - **Dying.** The guardian is forked from `run` (not executed, and without fork
//!   handlers), so it shares `run`'s open files, among them what keeps `run`'s holds
//!   alive (the host namespace's liveness lock, a distributed scope's connection). It waits on a pipe of which only `run`
//!   has the write end: when `run` dies, even by SIGKILL, the pipe ends, and the guardian
//!   SIGKILLs the whole group, itself included. So the lock is freed only once every
//!   process of the group has been killed. When `run` ends normally, it tells the
//!   guardian to exit quietly.
//! - **A terminal.** If `run` is in the foreground of its terminal, the group is made the
//!   foreground group, so that the command reads the terminal and gets Ctrl-C directly;
//!   `run` takes the terminal back when the group is done. On a terminal it follows a
//!   stopped member (Ctrl-Z, or a read of the terminal from the background): it stops
//!   itself, so that the shell sees its job stopped, and continues the group when it is
//!   continued (in the foreground, with the terminal).

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

/// How a member of the group ended, or that it stopped.
pub enum Event {
    /// The command itself ended: its exit code, or 128 + N if signal N killed it.
    CommandEnded(u8),
    /// A member stopped (Ctrl-Z, SIGSTOP).
    Stopped,
    /// Another member ended.
    Other,
}

/// A running command in a process group of its own, guarded.
pub struct Tree {
    /// The group's id: the guardian's pid.
    pgid: libc::pid_t,
    /// The command's pid.
    command: libc::pid_t,
    /// The write end of the guardian's pipe; written `q` and closed when done.
    guardian: Option<OwnedFd>,
    /// Whether stdin is a terminal: then a shell's job control is about, and a stopped
    /// member stops `run` too (elsewhere nobody would continue `run`).
    tty: bool,
    /// Whether the group was given the terminal, which `run` then takes back.
    foreground: bool,
}

impl Tree {
    /// Starts `argv` in a new guarded process group. Makes this process a child subreaper.
    pub fn spawn(argv: &[OsString]) -> io::Result<Tree> {
        // The guardian first, so that it is not adopted by this process as an orphan.
        let (pgid, guardian) = start_guardian()?;
        // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes a flag.
        if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong) } == -1 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a plain system call on stdin.
        let tty = unsafe { libc::isatty(0) == 1 };
        let mut tree = Tree { pgid, command: 0, guardian: Some(guardian), tty, foreground: false };
        tree.foreground = tty && in_foreground() && give_terminal(pgid);
        let mut command = Command::new(&argv[0]);
        command.args(&argv[1..]);
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: the closure runs in the child between fork and exec, where only
        // async-signal-safe calls are allowed: prctl, getppid, setpgid and _exit, which
        // neither allocate nor take a lock.
        //
        // PR_SET_PDEATHSIG: if latchkey dies, the command gets SIGKILL from the kernel
        // as well as from the guardian. If latchkey died before that took effect, the
        // child is reparented already (getppid differs) and exits.
        unsafe {
            command.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) == -1 {
                    return Err(io::Error::last_os_error());
                }
                if libc::getppid() != parent {
                    libc::_exit(128 + libc::SIGKILL);
                }
                if libc::setpgid(0, pgid) == -1 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        // (On failure, dropping `tree` takes the terminal back and ends the guardian.)
        let child = command.spawn()?;
        tree.command = child.id() as libc::pid_t;
        Ok(tree)
    }

    /// Sends `signal` to every process of the group (the guardian ignores all but SIGKILL).
    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill takes a (negated) process group id and a signal number.
        unsafe { libc::kill(-self.pgid, signal) };
    }

    /// Reaps what has ended or stopped in the group, without blocking; and whether no
    /// process of the group is left (ECHILD: none is a child of ours, and, as we adopt
    /// orphans, none is left at all).
    pub fn reap(&self) -> (Vec<Event>, bool) {
        let mut events = Vec::new();
        loop {
            // SAFETY: a zeroed siginfo_t is valid; waitid fills it in.
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            let flags = libc::WEXITED | libc::WNOHANG | if self.tty { libc::WSTOPPED } else { 0 };
            // SAFETY: waitid on our process group, into a local.
            let got = unsafe { libc::waitid(libc::P_PGID, self.pgid as libc::id_t, &mut info, flags) };
            if got == -1 {
                match io::Error::last_os_error().raw_os_error() {
                    Some(libc::EINTR) => continue,
                    _ => return (events, true),
                }
            }
            // SAFETY: waitid filled in the child fields (si_pid is 0 if nothing changed).
            let (pid, code, status) = unsafe { (info.si_pid(), info.si_code, info.si_status()) };
            if pid == 0 {
                return (events, false);
            }
            events.push(match code {
                libc::CLD_STOPPED => Event::Stopped,
                _ if pid != self.command => Event::Other,
                libc::CLD_EXITED => Event::CommandEnded(status as u8),
                _ => Event::CommandEnded((128 + status) as u8),
            });
        }
    }

    /// After a member stopped (Ctrl-Z; or a read of the terminal from the background):
    /// takes the terminal back and stops this process too, as a shell expects of its job;
    /// once continued (`fg`, `bg`), gives the terminal to the group if continued in the
    /// foreground, and continues the group.
    pub fn follow_stop(&mut self) {
        if !self.tty {
            return;
        }
        if std::mem::take(&mut self.foreground) {
            take_terminal_back();
        }
        // SAFETY: stops this process; the shell continues it.
        unsafe { libc::raise(libc::SIGSTOP) };
        self.foreground = in_foreground() && give_terminal(self.pgid);
        self.signal(libc::SIGCONT);
    }

    /// The group is done: takes the terminal back, and ends the guardian without a kill.
    pub fn finish(&mut self) {
        if std::mem::take(&mut self.foreground) {
            take_terminal_back();
        }
        if let Some(guardian) = self.guardian.take() {
            // SAFETY: writes one byte from a local to our pipe.
            unsafe { libc::write(guardian.as_raw_fd(), b"q".as_ptr().cast(), 1) };
        }
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Whether this process is in the foreground process group of the terminal on stdin.
fn in_foreground() -> bool {
    // SAFETY: plain system calls on stdin.
    unsafe { libc::isatty(0) == 1 && libc::tcgetpgrp(0) == libc::getpgrp() }
}

/// Makes `pgid` the terminal's foreground group; whether it worked.
fn give_terminal(pgid: libc::pid_t) -> bool {
    // SAFETY: a plain system call on stdin.
    unsafe { libc::tcsetpgrp(0, pgid) == 0 }
}

/// Makes this process's group the terminal's foreground group again. From the background,
/// tcsetpgrp sends SIGTTOU (which would stop us) unless it is blocked: it is, meanwhile.
fn take_terminal_back() {
    // SAFETY: signal masks of this thread, in locals, and a system call on stdin.
    unsafe {
        let mut block: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut block);
        libc::sigaddset(&mut block, libc::SIGTTOU);
        libc::pthread_sigmask(libc::SIG_BLOCK, &block, &mut old);
        libc::tcsetpgrp(0, libc::getpgrp());
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
    }
}

/// A pipe whose ends are closed on exec: (read, write).
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 writes two new descriptors into the array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors are new and owned by nothing else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Starts the guardian, leader of a new process group, and returns its pid (the group's
/// id) and the write end of its pipe. It is a grandchild (its parent exits at once), so
/// that waiting for the group never waits for it.
fn start_guardian() -> io::Result<(libc::pid_t, OwnedFd)> {
    let (orders_read, orders_write) = pipe()?;
    let (pid_read, pid_write) = pipe()?;
    let (orders, to_parent) = (orders_read.as_raw_fd(), pid_write.as_raw_fd());
    let (parents_end, parents_pid_end) = (orders_write.as_raw_fd(), pid_read.as_raw_fd());
    // SAFETY: the child runs only async-signal-safe system calls (clone, setpgid,
    // signal, close, getpid, write, read, kill, _exit) on values prepared before.
    let middle = unsafe { raw_fork() };
    if middle == -1 {
        return Err(io::Error::last_os_error());
    }
    if middle == 0 {
        // SAFETY: see above; this process never returns from here.
        unsafe { guardian_process(orders, to_parent, parents_end, parents_pid_end) };
    }
    drop(pid_write);
    drop(orders_read);
    // SAFETY: reaps the middle process, our child, which exits at once.
    unsafe { libc::waitpid(middle, std::ptr::null_mut(), 0) };
    let mut pid = [0u8; 4];
    let mut read = 0;
    while read < pid.len() {
        // SAFETY: reads into a local buffer from our pipe.
        let n = unsafe { libc::read(pid_read.as_raw_fd(), pid[read..].as_mut_ptr().cast(), pid.len() - read) };
        match n {
            n if n > 0 => read += n as usize,
            -1 if io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) => continue,
            _ => return Err(io::Error::other("the guardian of the command's process group did not start")),
        }
    }
    Ok((i32::from_ne_bytes(pid), orders_write))
}

/// `fork()` without the fork handlers of `pthread_atfork`: the host scope's handler lets a
/// forked child drop the parent's namespace files (so that a child does not keep its
/// parent's holds alive); the guardian must keep them, and lets them go only after it
/// killed the group. Returns as fork does: 0 in the child, its pid in the parent, -1.
///
/// # Safety
/// As for `fork()` in a multi-threaded process, and more: the child has no fork handler
/// run for it (no lock of the C library is reset), so it may only make system calls.
unsafe fn raw_fork() -> libc::pid_t {
    // clone with SIGCHLD and no other flag (and no new stack) is fork.
    libc::syscall(libc::SYS_clone, libc::SIGCHLD as libc::c_ulong, 0usize, 0usize, 0usize, 0usize) as libc::pid_t
}

/// The middle process and the guardian, after fork. Async-signal-safe only.
///
/// # Safety
/// Call only in a child just forked; it never returns.
unsafe fn guardian_process(orders: RawFd, to_parent: RawFd, parents_end: RawFd, parents_pid_end: RawFd) -> ! {
    if raw_fork() != 0 {
        libc::_exit(0); // the middle process (or a failed fork: the parent reads EOF)
    }
    libc::close(parents_end);
    libc::close(parents_pid_end);
    for signal in [
        libc::SIGINT,
        libc::SIGTERM,
        libc::SIGHUP,
        libc::SIGQUIT,
        libc::SIGTSTP,
        libc::SIGTTIN,
        libc::SIGTTOU,
        libc::SIGPIPE,
    ] {
        libc::signal(signal, libc::SIG_IGN);
    }
    if libc::setpgid(0, 0) == -1 {
        libc::_exit(1);
    }
    // Not holding the caller's output open: a reader of it sees its end when latchkey ends.
    for fd in 0..3 {
        libc::close(fd);
    }
    let pid = libc::getpid().to_ne_bytes();
    libc::write(to_parent, pid.as_ptr().cast(), pid.len());
    libc::close(to_parent);
    let mut order = 0u8;
    loop {
        match libc::read(orders, (&mut order as *mut u8).cast(), 1) {
            1 if order == b'q' => libc::_exit(0),
            // latchkey died: kill the whole group, this process last of all (kill marks
            // every member before it returns), so that what keeps latchkey's holds alive
            // is let go only after that.
            0 => {
                libc::kill(0, libc::SIGKILL);
                libc::_exit(0)
            }
            -1 if *libc::__errno_location() == libc::EINTR => continue,
            _ => libc::_exit(1),
        }
    }
}
