//! The lock a command takes, as `run` and `hold` name it: the options flock(1) users
//! know (`-n`, `-w`, `-E`, `-s`, `-x`), and taking it.

use std::io::{self, IsTerminal};
use std::time::{Duration, Instant};

use clap::Args;
use latchkey::{ErrorKind, Guard, Mutex, RwLock, Scope, Semaphore, State, MAX_SEMAPHORE_CAPACITY, RWLOCK_CAPACITY};

use crate::duration;
use crate::exit::{self, UsageError};

/// The options that say which lock to take, and how long to wait for it.
#[derive(Args, Debug)]
pub struct LockArgs {
    /// The scope of the lock: `host:` (this user's namespace), `host:/dir` or `process:`.
    #[arg(long, value_name = "URL", env = "LATCHKEY_SCOPE", default_value = "host:")]
    scope: String,
    /// Try once: if the lock is busy, exit at once with the conflict code (75, or -E).
    #[arg(short = 'n', long, visible_alias = "nb", conflicts_with = "timeout")]
    pub nonblock: bool,
    /// Give up after this long without the lock (exit with the conflict code): 500ms,
    /// 2s, 1m, 1h, or seconds (`-w 0.5`).
    #[arg(
        short = 'w',
        long = "timeout",
        visible_alias = "wait",
        value_name = "DURATION",
        value_parser = duration::parse,
        allow_hyphen_values = true
    )]
    pub timeout: Option<Duration>,
    /// The exit code when the lock could not be had (busy with -n, or -w passed).
    #[arg(short = 'E', long, value_name = "N", default_value_t = exit::CONFLICT)]
    pub conflict_exit_code: u8,
    /// Take a read hold of the reader-writer lock NAME, shared with other readers.
    #[arg(short = 's', long, visible_alias = "read", conflicts_with_all = ["exclusive", "permits", "capacity"])]
    pub shared: bool,
    /// Take a write hold of the reader-writer lock NAME: no reader and no other writer.
    #[arg(short = 'x', long, visible_alias = "write", conflicts_with_all = ["permits", "capacity"])]
    pub exclusive: bool,
    /// Take K permits of the semaphore NAME (needs --capacity).
    #[arg(long, value_name = "K", requires = "capacity", value_parser = clap::value_parser!(u32).range(1..))]
    pub permits: Option<u32>,
    /// The number of permits of the semaphore NAME (needs --permits).
    #[arg(
        long,
        value_name = "N",
        requires = "permits",
        value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_SEMAPHORE_CAPACITY))
    )]
    pub capacity: Option<u32>,
    /// Say on stderr why the lock could not be had.
    #[arg(long)]
    pub verbose: bool,
    /// The lock's name, e.g. `db-migrations` or `jobs/nightly`.
    #[arg(value_name = "NAME")]
    pub name: String,
}

impl LockArgs {
    /// The scope URL: `--scope`, else `$LATCHKEY_SCOPE` unless empty, else `host:`.
    pub fn scope_url(&self) -> &str {
        if self.scope.is_empty() {
            "host:"
        } else {
            &self.scope
        }
    }
}

/// The kinds of lock, as the help of `run` and `hold` lists them.
pub const KINDS: &str = "\
Kinds of lock:
  (default)                   the mutex NAME: one holder at a time
  -s, --shared                a read hold of the reader-writer lock NAME: readers share it
  -x, --exclusive             a write hold of the reader-writer lock NAME: it excludes
                              readers and other writers, and readers that come after a
                              waiting writer wait behind it
  --permits K --capacity N    K permits of the semaphore NAME of N permits
A name is one kind of lock at a time: a mutex NAME and a reader-writer lock NAME are not
the same lock, and asking for one while the other is in use exits 65.";

/// The lock a command takes.
pub enum Lock {
    Mutex(Mutex),
    Read(RwLock),
    Write(RwLock),
    Permits(Semaphore, u32),
}

/// What came of trying to take the lock.
pub enum Taken<'a> {
    Held(Guard<'a>),
    /// Busy with `-n`, or not granted before `-w`.
    Conflict,
}

impl Lock {
    /// Opens the lock `args` name in `scope`.
    pub fn open(scope: &Scope, args: &LockArgs) -> anyhow::Result<Lock> {
        Ok(match (args.shared, args.exclusive, args.permits, args.capacity) {
            (true, _, _, _) => Lock::Read(scope.rwlock(&args.name)?),
            (_, true, _, _) => Lock::Write(scope.rwlock(&args.name)?),
            (_, _, Some(permits), Some(capacity)) => {
                if permits > capacity {
                    return Err(UsageError(format!("--permits {permits} is more than --capacity {capacity}")).into());
                }
                Lock::Permits(scope.semaphore(&args.name, capacity)?, permits)
            }
            _ => Lock::Mutex(scope.mutex(&args.name)?),
        })
    }

    fn try_take(&self) -> latchkey::Result<Option<Guard<'_>>> {
        match self {
            Lock::Mutex(mutex) => mutex.try_lock(),
            Lock::Read(rwlock) => rwlock.try_read(),
            Lock::Write(rwlock) => rwlock.try_write(),
            Lock::Permits(semaphore, permits) => semaphore.try_acquire(*permits),
        }
    }

    fn take(&self, timeout: Option<Duration>) -> latchkey::Result<Guard<'_>> {
        match (self, timeout) {
            (Lock::Mutex(mutex), None) => mutex.lock_blocking(),
            (Lock::Mutex(mutex), Some(t)) => mutex.lock_blocking_timeout(t),
            (Lock::Read(rwlock), None) => rwlock.read_blocking(),
            (Lock::Read(rwlock), Some(t)) => rwlock.read_blocking_timeout(t),
            (Lock::Write(rwlock), None) => rwlock.write_blocking(),
            (Lock::Write(rwlock), Some(t)) => rwlock.write_blocking_timeout(t),
            (Lock::Permits(semaphore, k), None) => semaphore.acquire_blocking(*k),
            (Lock::Permits(semaphore, k), Some(t)) => semaphore.acquire_blocking_timeout(*k, t),
        }
    }

    /// Takes the lock as `args` say: once with `-n`, within `-w` of `started`, or
    /// whenever it comes free. On a terminal, says who holds it first if it is busy.
    pub fn acquire(&self, scope: &Scope, args: &LockArgs, started: Instant) -> latchkey::Result<Taken<'_>> {
        let taken = if args.nonblock {
            self.try_take()?
        } else {
            let waiting_on_a_terminal = io::stderr().is_terminal();
            match self.try_take()? {
                Some(guard) => Some(guard),
                None => {
                    if waiting_on_a_terminal {
                        if let Some(why) = scope.inspect(&args.name).ok().and_then(|state| describe_wait(&state)) {
                            eprintln!("latchkey: waiting for {:?} ({why})", args.name);
                        }
                    }
                    match self.take(args.timeout.map(|t| t.saturating_sub(started.elapsed()))) {
                        Ok(guard) => Some(guard),
                        Err(err) if err.kind() == ErrorKind::Timeout => None,
                        Err(err) => return Err(err),
                    }
                }
            }
        };
        if taken.is_none() && args.verbose {
            let why = scope.inspect(&args.name).ok().and_then(|state| describe_wait(&state));
            let how = if args.nonblock { "it is busy".to_string() } else { "the wait timed out".to_string() };
            match why {
                Some(why) => eprintln!("latchkey: could not get {:?}: {how} ({why})", args.name),
                None => eprintln!("latchkey: could not get {:?}: {how}", args.name),
            }
        }
        Ok(taken.map_or(Taken::Conflict, Taken::Held))
    }
}

/// Why a request for the name in `state` waits: `held by pid 1234 for 2.30s`.
pub fn describe_wait(state: &State) -> Option<String> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use latchkey::{Holder, Name};

    fn state(capacity: u32, holders: &[(u32, u32, u64)], waiters: usize) -> State {
        let mut state = State::idle(Name::new("x").unwrap());
        state.capacity = capacity;
        state.in_use = holders.iter().map(|h| h.1).sum();
        state.holders = holders
            .iter()
            .map(|&(pid, permits, ms)| Holder::new(pid, permits).held_for(Some(Duration::from_millis(ms))))
            .collect();
        state.waiters = waiters;
        state
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
