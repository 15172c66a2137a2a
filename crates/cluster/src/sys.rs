//! The one door to the operating system for process workers: starting a child, watching
//! it through a pidfd, killing and reaping it, and the child's own start-up calls.
//!
//! Children are forked by one thread that lives as long as the process. Linux sends a
//! child's parent-death signal when the *thread* that forked it exits, not the process;
//! forking from a runtime's thread, which may end before the process does, would kill
//! the children with it.

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{mpsc, OnceLock};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::oneshot;

/// Set in a child's environment: `FD,PPID`, the fd of its end of the socket and the pid
/// of its parent.
pub(crate) const CHILD_ENV: &str = "LATCHKEY_CLUSTER_CHILD";

/// A child to fork: its command, the socket end whose fd number its environment names
/// (held open until the fork, so that the number names it and nothing else), and where
/// the answer goes.
type Job = (Command, UnixStream, oneshot::Sender<io::Result<Forked>>);

/// A child just forked, on its way to the spawn that asked for it. Dropped before the
/// spawn took it (the spawn was cancelled, even after the reply was sent), it is killed
/// and reaped, so that no child is left behind.
struct Forked(Option<std::process::Child>);

impl Forked {
    /// The child's pid: from here on the caller kills and reaps it.
    fn into_pid(mut self) -> libc::pid_t {
        self.0.take().expect("a forked child is taken once").id() as libc::pid_t
    }
}

impl Drop for Forked {
    fn drop(&mut self) {
        if let Some(mut orphan) = self.0.take() {
            let _ = orphan.kill();
            let _ = orphan.wait();
        }
    }
}

/// A running child process, watched through its pidfd. Dropped before it is reaped, it
/// is killed and reaped, so that no child outlives its supervisor.
pub(crate) struct Child {
    pid: libc::pid_t,
    pidfd: AsyncFd<OwnedFd>,
    reaped: bool,
}

impl Child {
    /// Starts this executable with `args` as a process worker whose end of the socket is
    /// `socket`. Must be called within the runtime (the pidfd registers with it).
    pub(crate) async fn spawn(args: &[OsString], socket: UnixStream) -> io::Result<Child> {
        let exe = std::env::current_exe()?;
        let fd = socket.as_raw_fd();
        let parent = std::process::id() as libc::pid_t;
        let mut command = Command::new(exe);
        command.args(args).env(CHILD_ENV, format!("{fd},{parent}")).stdin(Stdio::null());
        // SAFETY: the closure runs in the forked child before exec and makes only
        // async-signal-safe system calls (fcntl, prctl, getppid); it allocates nothing.
        unsafe {
            command.pre_exec(move || {
                // The socket is close-on-exec in the parent; this child keeps its end.
                if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                    return Err(io::Error::last_os_error());
                }
                start_dying_with_parent(parent)
            });
        }
        let (tx, rx) = oneshot::channel();
        // The socket goes with the job: a spawn cancelled before the fork must not close
        // it, or its fd number could name another file by the time the child is forked
        // (a child left waiting on someone else's socket was seen under load).
        spawner().send((command, socket, tx)).map_err(|_| io::ErrorKind::BrokenPipe)?;
        let pid = rx.await.map_err(|_| io::Error::other("the spawner thread is gone"))??.into_pid();
        // SAFETY: pidfd_open takes a pid and flags; the pid is our unreaped child, so it
        // names that process and no other.
        let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if raw < 0 {
            let err = io::Error::last_os_error();
            kill_and_reap(pid);
            return Err(err);
        }
        // SAFETY: `raw` is a new fd that nothing else owns.
        let pidfd = unsafe { OwnedFd::from_raw_fd(raw as RawFd) };
        // SAFETY: the `OwnedFd` is moved into the `AsyncFd`, which alone owns it from here
        // on: the fd stays open and the same until the `AsyncFd` is dropped.
        let pidfd = match unsafe { AsyncFd::register_with_interest(pidfd, Interest::READABLE) } {
            Ok(pidfd) => pidfd,
            Err(err) => {
                kill_and_reap(pid);
                return Err(err.into());
            }
        };
        Ok(Child { pid, pidfd, reaped: false })
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.pid as u32
    }

    /// Waits until the process has ended (it is then a zombie until reaped). Cancel safe.
    pub(crate) async fn exited(&self) {
        // A pidfd becomes readable when its process ends, and stays so.
        let _ = self.pidfd.readable().await;
    }

    /// Sends SIGKILL.
    pub(crate) fn kill(&self) {
        // SAFETY: a plain system call on our child, which is not reaped yet, so its pid
        // is not reused.
        unsafe { libc::kill(self.pid, libc::SIGKILL) };
    }

    /// Reaps the ended process: its exit status.
    pub(crate) fn reap(&mut self) -> io::Result<ExitStatus> {
        self.reaped = true;
        waitpid(self.pid)
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if !self.reaped {
            kill_and_reap(self.pid);
        }
    }
}

fn kill_and_reap(pid: libc::pid_t) {
    // SAFETY: a plain system call on our unreaped child.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let _ = waitpid(pid);
}

fn waitpid(pid: libc::pid_t) -> io::Result<ExitStatus> {
    let mut status = 0;
    loop {
        // SAFETY: `status` is a valid place for the status; `pid` is our child.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            return Ok(ExitStatus::from_raw(status));
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// The thread that forks every child, started on first use; it lives as long as the
/// process.
fn spawner() -> &'static mpsc::Sender<Job> {
    static SPAWNER: OnceLock<mpsc::Sender<Job>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("latchkey-cluster-spawner".into())
            .spawn(move || {
                for (mut command, socket, reply) in rx {
                    let spawned = command.spawn();
                    // The child has its copy. A spawn cancelled meanwhile drops the child,
                    // which kills and reaps it.
                    drop(socket);
                    let _ = reply.send(spawned.map(|child| Forked(Some(child))));
                }
            })
            .expect("start the thread that spawns process workers");
        tx
    })
}

/// Asks for SIGKILL when the parent dies, then checks that the parent `parent` is
/// still the parent (it may have died before the request). Async-signal-safe.
fn start_dying_with_parent(parent: libc::pid_t) -> io::Result<()> {
    // SAFETY: prctl with PR_SET_PDEATHSIG takes a signal number; getppid takes nothing.
    unsafe {
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) == -1 {
            return Err(io::Error::last_os_error());
        }
        if libc::getppid() != parent {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
    }
    Ok(())
}

/// In a child at start-up: reads and clears [`CHILD_ENV`], asks to die with the parent,
/// and takes its end of the socket. `None` if this process is not a process worker.
pub(crate) fn child_socket() -> Option<io::Result<UnixStream>> {
    let value = std::env::var(CHILD_ENV).ok()?;
    // Children of this worker must not take themselves for workers. Nothing else runs
    // yet that could read the environment at the same time.
    std::env::remove_var(CHILD_ENV);
    let parsed = value.split_once(',').and_then(|(fd, ppid)| Some((fd.parse().ok()?, ppid.parse().ok()?)));
    let Some((fd, parent)) = parsed else {
        return Some(Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{CHILD_ENV}={value:?} is malformed"))));
    };
    Some(take_socket(fd, parent))
}

fn take_socket(fd: RawFd, parent: libc::pid_t) -> io::Result<UnixStream> {
    // Again from this thread: the request made before exec holds for the thread that
    // made it, which is this process's main thread; this thread may be another.
    start_dying_with_parent(parent)?;
    // SAFETY: fcntl on an fd number; it fails harmlessly if the fd is not open.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the parent passed this fd for this process alone, and nothing else in the
    // process owns it: the variable that named it is gone.
    Ok(unsafe { UnixStream::from_raw_fd(fd) })
}
