//! `latchkey run`: run a command, and everything it starts, while holding a named lock.

use std::ffi::OsString;
use std::io::Write;
use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use latchkey::{Guard, Scope};

use crate::lock::{Lock, LockArgs, Taken};
use crate::signals::{self, Signals};
use crate::tree::{self, Report, Tree};
use crate::{duration, exit, fds};

pub const AFTER_HELP: &str = "\
Examples:
  latchkey run nightly -- ./backup.sh          wait for the lock, then run the script
  latchkey run -n nightly ./backup.sh          skip the run if the lock is busy (exit 75)
  latchkey run -w 10 -E 0 nightly -c 'make'    wait at most 10 s; a busy lock is no error
  latchkey run -s config -- cat config.ini     read hold: readers share the lock
  latchkey run -x config -- ./rewrite-config   write hold: no reader, no other writer

The lock covers the whole command: a guardian process adopts every process COMMAND
starts, whatever group or session it moves to, and latchkey releases the lock only when
none is left (background ones included). If latchkey dies, even by SIGKILL, the guardian
kills them all before the lock is freed.

Signals: latchkey and COMMAND are one job for the terminal and the shell, as without
latchkey: Ctrl-C, Ctrl-\\ and a hangup reach COMMAND from the terminal, Ctrl-Z stops
both. SIGINT, SIGTERM, SIGHUP and SIGQUIT sent to latchkey with kill(1) are passed on to
every process of COMMAND (a signal sent to the whole job with kill(1) so reaches COMMAND
twice); latchkey waits for them to end, then releases the lock. Signals latchkey's
caller ignores (nohup) stay ignored. If COMMAND was killed by SIGINT or SIGQUIT, latchkey
ends by the same signal. After a Ctrl-C, once COMMAND has ended, what it left running
(background jobs, which ignore SIGINT) gets SIGTERM: latchkey would wait for it.

A lost hold (the namespace file deleted under it; in a distributed scope, a session
that lapsed): by default latchkey says so on stderr, sends SIGTERM to every process of
COMMAND, SIGKILL after --kill-after, and exits 79. With --on-lost=warn it only warns.
";

/// The arguments of `latchkey run`.
#[derive(Args)]
pub struct RunArgs {
    #[command(flatten)]
    lock: LockArgs,
    /// Run STRING with `sh -c` instead of COMMAND.
    #[arg(short = 'c', long = "command", value_name = "STRING")]
    command_string: Option<String>,
    /// What to do if the hold is lost while COMMAND runs.
    #[arg(long, value_enum, value_name = "WHAT", default_value = "stop")]
    on_lost: OnLost,
    /// After a lost hold, how long COMMAND has to end after SIGTERM before SIGKILL.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = duration::parse)]
    kill_after: Duration,
    /// The command to run while holding the lock, and its arguments, after NAME (or after
    /// `--`). latchkey's options go before NAME.
    #[arg(
        value_name = "COMMAND",
        trailing_var_arg = true,
        allow_hyphen_values = true,
        required_unless_present = "command_string",
        conflicts_with = "command_string"
    )]
    argv: Vec<OsString>,
}

/// What `run` does when the hold is lost while the command runs.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum OnLost {
    /// SIGTERM to the command's group, SIGKILL after --kill-after; exit 79.
    Stop,
    /// Say so on stderr, and let the command go on.
    Warn,
}

/// Takes the lock, runs the command's process tree to its end, releases the lock;
/// returns the exit code.
pub fn run(args: RunArgs) -> anyhow::Result<u8> {
    let started = Instant::now();
    let argv = match &args.command_string {
        Some(string) => vec!["sh".into(), "-c".into(), string.into()],
        None => args.argv.clone(),
    };
    let scope = Scope::open(args.lock.scope_url())?;
    let lock = Lock::open(&scope, &args.lock)?;
    let guard = match lock.acquire(&scope, &args.lock, started)? {
        Taken::Held(guard) => guard,
        Taken::Conflict => return Ok(args.lock.conflict_exit_code),
    };
    let signals = Signals::catch()?;
    let keep = scope.location().map(|dir| tree::namespace_fds(&dir)).unwrap_or_default();
    let mut tree = Tree::spawn(&argv, &keep)?;
    let outcome = supervise(&mut tree, &signals, &guard, &args);
    tree.finish();
    if let Err(err) = guard.release() {
        if outcome.code != exit::LOST {
            say(format_args!("warning: {err}"));
        }
    }
    if let Some(signal) = outcome.killed_by.filter(|&s| s == libc::SIGINT || s == libc::SIGQUIT) {
        signals::die_of(signal);
    }
    Ok(outcome.code)
}

/// How `run` ends.
struct Outcome {
    code: u8,
    /// The signal that killed the command, if one did.
    killed_by: Option<i32>,
}

/// Writes a line to stderr, ignoring failure (a closed stderr must not stop `run`).
fn say(message: std::fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stderr(), "latchkey: {message}");
}

/// How often `run` looks at whether its hold is lost: a flag that the scope keeps (its
/// watcher thread, its keep-alive), not a question to a server.
const LOST_CHECK: Duration = tree::TICK;

/// Waits until no process of the command's tree is left, passing signals on and
/// watching the hold.
fn supervise(tree: &mut Tree, signals: &Signals, guard: &Guard<'_>, args: &RunArgs) -> Outcome {
    let mut outcome = Outcome { code: exit::SOFTWARE, killed_by: None };
    let mut lost_at: Option<Instant> = None;
    let mut killed = false;
    let mut command_ended = false;
    let mut interrupted = false;
    loop {
        // Ctrl-C or Ctrl-\ from the terminal: once the command itself has ended, the
        // processes it left running (a shell's background jobs, which ignore SIGINT) are
        // what the user stops.
        interrupted |= signals.take_from_terminal().iter().any(|&s| s == libc::SIGINT || s == libc::SIGQUIT);
        if interrupted && command_ended {
            tree.signal(libc::SIGTERM);
            tree.signal(libc::SIGCONT);
            interrupted = false;
        }
        for signal in signals.take() {
            tree.signal(signal);
            if signal == libc::SIGTERM || signal == libc::SIGHUP {
                tree.signal(libc::SIGCONT); // a stopped process gets it too
            }
        }
        if lost_at.is_none() && guard.is_lost() {
            lost_at = Some(Instant::now());
            let why =
                guard.check().err().map_or_else(|| "the hold is no longer recorded".to_string(), |e| e.to_string());
            match args.on_lost {
                OnLost::Stop => {
                    say(format_args!(
                        "lost the hold on {:?} ({why}); stopping the command: SIGTERM, then SIGKILL after {}",
                        args.lock.name,
                        duration::show(args.kill_after)
                    ));
                    tree.signal(libc::SIGTERM);
                    tree.signal(libc::SIGCONT);
                }
                OnLost::Warn => {
                    say(format_args!("warning: lost the hold on {:?} ({why}); the command goes on", args.lock.name))
                }
            }
        }
        if args.on_lost == OnLost::Stop && !killed && lost_at.is_some_and(|at| at.elapsed() >= args.kill_after) {
            tree.kill();
            killed = true;
        }
        if !tree.has_buffered_report() {
            // SAFETY: the descriptor is the tree's, open for as long as `tree` lives.
            let reports = unsafe { BorrowedFd::borrow_raw(tree.reports_fd()) };
            signals.wait(reports, LOST_CHECK);
            if !fds::ready(reports, Duration::ZERO) && !tree.has_buffered_report() {
                continue;
            }
        }
        match tree.next_report() {
            Report::Started => {}
            Report::Ended { code, signal } => {
                outcome = Outcome { code, killed_by: signal };
                command_ended = true;
            }
            Report::Failed(code, why) => {
                say(format_args!("{why}"));
                outcome.code = code;
            }
            Report::Done => break,
            Report::GuardianLost => {
                say(format_args!("the guardian of the command's processes was killed; they are no longer tracked"));
                outcome.code = exit::SOFTWARE;
                break;
            }
        }
    }
    if lost_at.is_some() && args.on_lost == OnLost::Stop {
        outcome = Outcome { code: exit::LOST, killed_by: None };
    }
    outcome
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_help_names_every_signal_it_passes_on() {
        for signal in ["SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT"] {
            assert!(super::AFTER_HELP.contains(signal), "{signal}");
        }
        assert!(super::AFTER_HELP.contains(&super::exit::LOST.to_string()));
    }
}
