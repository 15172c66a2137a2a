//! The one door through which the kit starts processes: children that the kernel kills
//! (SIGKILL) when the test process dies, however it dies.

use std::io;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::sync::mpsc::{self, Sender};
use std::sync::OnceLock;

/// A command to start, and where to send the result.
type Job = (Command, Sender<io::Result<Child>>);

/// Starts `command` with `PR_SET_PDEATHSIG = SIGKILL`, so that the child dies with the test
/// process even when nothing runs its destructors (a SIGKILL from a test runner's timeout).
///
/// The kernel sends that signal when the *thread* that forked the child exits, not the
/// process; test harnesses run each test on a thread of its own, and a cluster kept in a
/// `static` outlives it. So all children are forked by one thread that lives as long as
/// the process.
pub(crate) fn spawn(mut command: Command) -> io::Result<Child> {
    static SPAWNER: OnceLock<Sender<Job>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("testkit-spawner".into())
            .spawn(move || {
                for (mut command, reply) in queue {
                    let _ = reply.send(command.spawn());
                }
            })
            .expect("testkit: cannot start the thread that starts child processes");
        jobs
    });
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs in the child between fork and exec, where only
    // async-signal-safe functions may be called: it calls prctl, getppid and _exit, which
    // are system calls that neither allocate nor take locks; `last_os_error` only reads errno.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died before prctl: then nobody would send the signal.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    let (reply, result) = mpsc::channel();
    spawner.send((command, reply)).expect("testkit: the spawner thread is gone");
    result.recv().expect("testkit: the spawner thread is gone")
}

/// `count` distinct loopback ports that were free a moment ago (all bound at once, then
/// released; another process may take one before the caller binds it, so callers retry).
pub(crate) fn free_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..count)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("testkit: cannot bind a loopback port"))
        .collect();
    listeners.iter().map(|l| l.local_addr().expect("testkit: a bound listener has an address").port()).collect()
}
