//! `latchkey hold --until-pid PID NAME`: takes a lock for the rest of a script. A
//! background process (in a session of its own) takes the lock and keeps it until
//! process PID exits; `hold` itself exits 0 once the lock is held.
//!
//! ```sh
//! latchkey hold --until-pid $$ nightly || exit   # the rest of the script holds "nightly"
//! ```

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::Args;
use latchkey::Scope;

use crate::exit::{self, UsageError};
use crate::fds;
use crate::lock::{Lock, LockArgs, Taken};

pub const AFTER_HELP: &str = "\
Example: one line at the top of a script holds the lock until the script ends:
  latchkey hold --until-pid $$ nightly || exit

The lock is held by a background process in a session of its own, and freed when PID
exits (however it exits), or when that process is killed. `hold` exits 0 once the lock
is held, with the conflict code if it could not be had (-n, -w), or with the code of the
error.";

/// The arguments of `latchkey hold` (and of the background process it starts).
#[derive(Args)]
pub struct HoldArgs {
    #[command(flatten)]
    lock: LockArgs,
    /// Hold the lock until the process PID exits (`$$`: the calling shell).
    #[arg(long, value_name = "PID", value_parser = clap::value_parser!(i32).range(1..))]
    until_pid: i32,
}

/// Where the background process finds what `hold` hands it.
const STATUS_FD: RawFd = 3;
const PIDFD_FD: RawFd = 4;

/// Starts the background holder and reports what came of it.
pub fn hold(args: HoldArgs) -> anyhow::Result<u8> {
    let pidfd = pidfd_open(args.until_pid)
        .map_err(|err| UsageError(format!("--until-pid {}: no such process ({err})", args.until_pid)))?;
    let (status_read, status_write) = fds::pipe()?;
    let mut command = Command::new(std::env::current_exe()?);
    // The same arguments, for the hidden subcommand that holds.
    command.arg("hold-in-background").args(std::env::args_os().skip(2).collect::<Vec<OsString>>());
    command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    // Above the numbers they get in the child, so that moving one there never overwrites
    // the other.
    // (The originals are closed at once: a pipe end left open here would keep the read
    // below from ever seeing the holder's end.)
    let status_write = rustix::io::fcntl_dupfd_cloexec(status_write, 10)?;
    let pidfd = rustix::io::fcntl_dupfd_cloexec(pidfd, 10)?;
    let (status, pid_fd) = (status_write.as_raw_fd(), pidfd.as_raw_fd());
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs in the child between fork and exec and makes only
    // async-signal-safe system calls (prctl, getppid, dup2, setsid, _exit).
    //
    // Until it holds the lock, the holder dies with `hold` (Ctrl-C while it waits leaves
    // nothing queued); then it clears that, and lives on in a session of its own.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) == -1 {
                return Err(io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                libc::_exit(128 + libc::SIGKILL);
            }
            if libc::dup2(status, STATUS_FD) == -1 || libc::dup2(pid_fd, PIDFD_FD) == -1 || libc::setsid() == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command.spawn()?;
    drop(status_write);
    let mut line = String::new();
    BufReader::new(File::from(status_read)).read_line(&mut line)?;
    let said = line.trim_end();
    let (word, rest) = said.split_once(' ').unwrap_or((said, ""));
    Ok(match word {
        "held" => {
            if args.lock.verbose {
                eprintln!(
                    "latchkey: holding {:?} (token {rest}) until process {} exits",
                    args.lock.name, args.until_pid
                );
            }
            // (The holder goes on alone; it is reaped by whoever adopts it.)
            std::mem::forget(child);
            0
        }
        "conflict" => args.lock.conflict_exit_code,
        "error" => {
            let (code, message) = rest.split_once(' ').unwrap_or((rest, ""));
            eprintln!("latchkey: {message}");
            code.parse().unwrap_or(exit::SOFTWARE)
        }
        _ => {
            let status = { child }.wait()?;
            eprintln!("latchkey: the background holder ended before it said whether it holds the lock ({status})");
            exit::SOFTWARE
        }
    })
}

/// The background holder: takes the lock, says so on its status descriptor, and keeps
/// it until the process its pidfd names exits.
pub fn hold_in_background(args: HoldArgs) -> anyhow::Result<u8> {
    // Nothing of the caller's is kept open (a pipe the caller's caller reads to its end,
    // a directory to unmount): only what `hold` handed over.
    // SAFETY: closes descriptors this process does not use, and changes directory.
    unsafe {
        libc::syscall(libc::SYS_close_range, PIDFD_FD as libc::c_uint + 1, libc::c_uint::MAX, 0 as libc::c_uint);
        libc::chdir(c"/".as_ptr());
    }
    // SAFETY: `hold` handed these descriptors to this process, which alone owns them.
    let (mut status, pidfd) = unsafe { (File::from_raw_fd(STATUS_FD), OwnedFd::from_raw_fd(PIDFD_FD)) };
    // If the process exits while the lock is awaited, nothing is left to hold it for:
    // this process ends (its place in the queue with it).
    let watched = rustix::io::fcntl_dupfd_cloexec(&pidfd, 0)?;
    let until_pid = args.until_pid;
    let mut status_copy = status.try_clone()?;
    std::thread::spawn(move || {
        while !fds::ready(&watched, Duration::from_secs(3600)) {}
        if !HELD.load(std::sync::atomic::Ordering::SeqCst) {
            let _ =
                writeln!(status_copy, "error {} process {until_pid} exited before the lock was held", exit::SOFTWARE);
            std::process::exit(0);
        }
    });
    let mut say = |line: String| {
        let _ = writeln!(status, "{line}");
    };
    let started = Instant::now();
    let taken = (|| -> anyhow::Result<Option<()>> {
        let scope = Scope::open(args.lock.scope_url())?;
        let lock = Lock::open(&scope, &args.lock)?;
        let taken = match lock.acquire(&scope, &args.lock, started)? {
            Taken::Conflict => None,
            Taken::Held(guard) => {
                if fds::ready(&pidfd, Duration::ZERO) {
                    let why = format!("process {} exited before the lock was held", args.until_pid);
                    say(format!("error {} {why}", exit::SOFTWARE));
                    return Ok(Some(()));
                }
                HELD.store(true, std::sync::atomic::Ordering::SeqCst);
                // SAFETY: clears this process's parent-death signal.
                unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, 0 as libc::c_ulong, 0, 0, 0) };
                say(format!("held {}", guard.fencing_token()));
                // Holds until the process exits, or the hold is lost (nothing left to keep).
                while !fds::ready(&pidfd, Duration::from_millis(500)) && !guard.is_lost() {}
                drop(guard);
                Some(())
            }
        };
        Ok(taken)
    })();
    match taken {
        Ok(Some(())) => {}
        Ok(None) => say("conflict".to_string()),
        Err(err) => say(format!("error {} {err:#}", exit::of_any(&err))),
    }
    Ok(0)
}

/// Whether the background holder holds the lock (then the process's exit is for the
/// holding loop to notice, not for the watcher of the wait).
static HELD: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    let pid = rustix::process::Pid::from_raw(pid).ok_or_else(|| io::Error::from_raw_os_error(libc::ESRCH))?;
    Ok(rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty())?)
}
