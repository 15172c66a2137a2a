//! `latchkey run`: run a command while holding a named lock.

use std::ffi::OsString;
use std::io::{self, IsTerminal};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::Command;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use latchkey::{Guard, Mutex, RwLock, Scope, Semaphore, State, RWLOCK_CAPACITY};

use crate::duration;

pub const AFTER_HELP: &str = "\
Kinds of lock:
  (default)                   the mutex NAME: one holder at a time
  --shared                    a read hold of the reader-writer lock NAME: readers share it,
                              a writer (a program using the latchkey library) excludes them
  --permits K --capacity N    K permits of the semaphore NAME of N permits

While COMMAND runs, latchkey ignores SIGINT and SIGQUIT (a terminal sends them to COMMAND
too) and passes SIGTERM on to it. If latchkey itself dies, even by SIGKILL, COMMAND is
killed with it, so it never runs without the lock; the lock is freed when latchkey dies.

Exit codes:
  N      COMMAND's own exit code, or 128 + N if signal N killed it
  64     usage error: a bad option or duration, an invalid lock name or scope URL, a name
         in use as another kind of lock or with another capacity, an unsupported scope
  70     another latchkey error (e.g. permission denied on the namespace directory)
  75     the lock could not be had before --timeout
  126    COMMAND could not be started
  127    COMMAND was not found";

/// The arguments of `latchkey run`.
#[derive(Args)]
pub struct RunArgs {
    /// The scope of the lock: `host:` (this user's namespace), `host:/dir` or `process:`.
    #[arg(long, value_name = "URL", default_value = "host:")]
    scope: String,
    /// Give up after this long without the lock (exit 75): 500ms, 2s, 1m, 1h or seconds.
    #[arg(long, value_name = "DURATION", value_parser = duration::parse, allow_hyphen_values = true)]
    timeout: Option<Duration>,
    /// Take a read hold of the reader-writer lock NAME, shared with other readers.
    #[arg(long, conflicts_with_all = ["permits", "capacity"])]
    shared: bool,
    /// Take K permits of the semaphore NAME (needs --capacity).
    #[arg(long, value_name = "K", requires = "capacity", value_parser = clap::value_parser!(u32).range(1..))]
    permits: Option<u32>,
    /// The number of permits of the semaphore NAME (needs --permits).
    #[arg(long, value_name = "N", requires = "permits", value_parser = clap::value_parser!(u32).range(1..))]
    capacity: Option<u32>,
    /// The lock's name, e.g. `db-migrations` or `jobs/nightly`.
    #[arg(value_name = "NAME")]
    name: String,
    /// The command to run while holding the lock, and its arguments, after `--`.
    #[arg(value_name = "COMMAND", last = true, required = true, num_args = 1..)]
    command: Vec<OsString>,
}

/// The lock `run` takes.
enum Lock {
    Mutex(Mutex),
    Shared(RwLock),
    Permits(Semaphore, u32),
}

impl Lock {
    fn open(scope: &Scope, args: &RunArgs) -> latchkey::Result<Lock> {
        Ok(match (args.shared, args.permits, args.capacity) {
            (true, _, _) => Lock::Shared(scope.rwlock(&args.name)?),
            (false, Some(permits), Some(capacity)) => Lock::Permits(scope.semaphore(&args.name, capacity)?, permits),
            _ => Lock::Mutex(scope.mutex(&args.name)?),
        })
    }

    fn try_take(&self) -> latchkey::Result<Option<Guard<'_>>> {
        match self {
            Lock::Mutex(mutex) => mutex.try_lock(),
            Lock::Shared(rwlock) => rwlock.try_read(),
            Lock::Permits(semaphore, permits) => semaphore.try_acquire(*permits),
        }
    }

    fn take(&self, timeout: Option<Duration>) -> latchkey::Result<Guard<'_>> {
        match (self, timeout) {
            (Lock::Mutex(mutex), None) => mutex.lock_blocking(),
            (Lock::Mutex(mutex), Some(t)) => mutex.lock_blocking_timeout(t),
            (Lock::Shared(rwlock), None) => rwlock.read_blocking(),
            (Lock::Shared(rwlock), Some(t)) => rwlock.read_blocking_timeout(t),
            (Lock::Permits(semaphore, k), None) => semaphore.acquire_blocking(*k),
            (Lock::Permits(semaphore, k), Some(t)) => semaphore.acquire_blocking_timeout(*k, t),
        }
    }
}

/// Takes the lock, runs the command, releases the lock; returns the exit code.
pub fn run(args: RunArgs) -> anyhow::Result<u8> {
    let started = Instant::now();
    let scope = Scope::open(&args.scope)?;
    let lock = Lock::open(&scope, &args)?;
    let guard = acquire(&scope, &lock, &args.name, args.timeout, started)?;
    let code = run_command(&args.command)?;
    if let Err(err) = guard.release() {
        eprintln!("latchkey: warning: {err}");
    }
    Ok(code)
}

/// Takes the lock within `timeout` of `started`. On a terminal, says who holds it first if
/// it is not free.
fn acquire<'a>(
    scope: &Scope,
    lock: &'a Lock,
    name: &str,
    timeout: Option<Duration>,
    started: Instant,
) -> latchkey::Result<Guard<'a>> {
    if io::stderr().is_terminal() {
        if let Some(guard) = lock.try_take()? {
            return Ok(guard);
        }
        if let Some(why) = scope.inspect(name).ok().and_then(|state| describe_wait(&state)) {
            eprintln!("latchkey: waiting for {name:?} ({why})");
        }
    }
    lock.take(timeout.map(|t| t.saturating_sub(started.elapsed())))
}

/// Why a request for the name in `state` waits: `held by pid 1234 for 2.30s`.
fn describe_wait(state: &State) -> Option<String> {
    const SHOWN: usize = 3;
    let mut parts: Vec<String> = state
        .holders
        .iter()
        .take(SHOWN)
        .map(|h| {
            let what = if h.permits == RWLOCK_CAPACITY && state.capacity == RWLOCK_CAPACITY {
                " (writing)".to_string()
            } else if state.capacity > 1 && state.capacity != RWLOCK_CAPACITY {
                format!(" ({} of {} permits)", h.permits, state.capacity)
            } else {
                String::new()
            };
            match h.held_for {
                Some(d) => format!("pid {}{what} for {}", h.pid, duration::show(d)),
                None => format!("pid {}{what}", h.pid),
            }
        })
        .collect();
    if state.holders.len() > SHOWN {
        parts.push(format!("{} more", state.holders.len() - SHOWN));
    }
    let mut why = match parts.len() {
        0 => String::new(),
        _ => format!("held by {}", parts.join(", ")),
    };
    if state.waiters > 0 {
        let ahead = format!("{} waiting ahead", state.waiters);
        why = if why.is_empty() { ahead } else { format!("{why}; {ahead}") };
    }
    (!why.is_empty()).then_some(why)
}

/// The child's pid while it runs, for the SIGTERM handler.
static CHILD: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward_signal(signal: libc::c_int) {
    let child = CHILD.load(Ordering::Relaxed);
    if child > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(child, signal) };
    }
}

/// Runs `argv` with inherited stdio and returns its exit code (128 + N if signal N
/// killed it; 127 if it was not found, 126 if it could not be started).
fn run_command(argv: &[OsString]) -> anyhow::Result<u8> {
    let mut command = Command::new(&argv[0]);
    command.args(&argv[1..]);
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs in the child between fork and exec, where only
    // async-signal-safe calls are allowed: it makes three system calls (prctl, getppid,
    // _exit) and neither allocates nor takes a lock.
    //
    // PR_SET_PDEATHSIG makes the kernel SIGKILL the child when its parent dies, so the
    // command cannot go on running after latchkey (and with it the lock) is gone, even if
    // latchkey is SIGKILLed. The signal is tied to the thread that forked, which is the
    // main thread, and it outlives exec (except of set-user-ID programs). If the parent
    // died before prctl took effect, the child has been reparented already and would never
    // get the signal: getppid() then differs from the parent's pid and the child exits.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) == -1 {
                return Err(io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                libc::_exit(128 + libc::SIGKILL);
            }
            Ok(())
        });
    }
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(err) => {
            eprintln!("latchkey: cannot run {:?}: {err}", argv[0]);
            return Ok(if err.kind() == io::ErrorKind::NotFound { 127 } else { 126 });
        }
    };
    CHILD.store(child.id() as i32, Ordering::Relaxed);
    // SAFETY: installs signal dispositions; the handler only makes async-signal-safe calls.
    unsafe {
        // The terminal sends SIGINT and SIGQUIT to the whole foreground group: the command
        // gets them and decides; latchkey stays to release the lock when it ends.
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGQUIT, libc::SIG_IGN);
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = forward_signal as *const () as libc::sighandler_t;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGTERM, &action, std::ptr::null_mut());
    }
    let status = child.wait()?;
    Ok(match (status.code(), status.signal()) {
        (Some(code), _) => code as u8,
        (None, Some(signal)) => (128 + signal) as u8,
        (None, None) => crate::EXIT_ERROR,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use latchkey::{Holder, Name};

    fn state(capacity: u32, holders: &[(u32, u32, u64)], waiters: usize) -> State {
        State {
            name: Name::new("x").unwrap(),
            capacity,
            in_use: holders.iter().map(|h| h.1).sum(),
            holders: holders
                .iter()
                .map(|&(pid, permits, ms)| Holder { pid, permits, held_for: Some(Duration::from_millis(ms)) })
                .collect(),
            waiters,
            queue: Vec::new(),
            waiting_exclusive: 0,
            last_token: 1,
        }
    }

    #[test]
    fn says_who_holds_the_lock() {
        assert_eq!(describe_wait(&state(1, &[(1234, 1, 2300)], 0)).unwrap(), "held by pid 1234 for 2.30s");
        assert_eq!(
            describe_wait(&state(2, &[(1, 1, 200), (2, 1, 300)], 1)).unwrap(),
            "held by pid 1 (1 of 2 permits) for 0.20s, pid 2 (1 of 2 permits) for 0.30s; 1 waiting ahead"
        );
        assert_eq!(
            describe_wait(&state(RWLOCK_CAPACITY, &[(7, RWLOCK_CAPACITY, 5)], 0)).unwrap(),
            "held by pid 7 (writing) for 5.0ms"
        );
        assert_eq!(describe_wait(&state(1, &[], 2)).unwrap(), "2 waiting ahead");
        assert_eq!(describe_wait(&state(1, &[], 0)), None);
    }
}
