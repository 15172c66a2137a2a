//! `latchkey`: named locks from the shell. `run` runs a command while holding a lock,
//! `status` shows who holds and who awaits which lock, `demo` has worker processes contend
//! for locks and checks that the locks held.

mod demo;
mod duration;
mod run;
mod status;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use latchkey::ErrorKind;

/// Bad arguments: a malformed option, an invalid lock name or scope URL (`EX_USAGE`).
pub const EXIT_USAGE: u8 = 64;
/// Any other latchkey error, e.g. permission denied on the namespace (`EX_SOFTWARE`).
pub const EXIT_ERROR: u8 = 70;
/// The lock could not be had before the timeout (`EX_TEMPFAIL`).
pub const EXIT_TIMEOUT: u8 = 75;

const EXIT_CODES: &str = "\
Exit codes:
  0      success; for `demo`, every invariant held
  1      demo: an invariant did not hold
  64     usage error: a bad option or duration, an invalid lock name or scope URL, a name
         in use as another kind of lock or with another capacity, an unsupported scope
  70     another latchkey error (e.g. permission denied on the namespace directory)
  75     run: the lock could not be had before --timeout
  126    run: COMMAND could not be started
  127    run: COMMAND was not found
  other  run: COMMAND's own exit code, or 128 + N if signal N killed it";

#[derive(Parser)]
#[command(
    name = "latchkey",
    version,
    about = "Named locks shared by the processes of a machine: run a command under a lock, see who holds what.",
    after_help = EXIT_CODES,
    arg_required_else_help = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a command while holding a named lock, then release it.
    #[command(after_help = run::AFTER_HELP)]
    Run(run::RunArgs),
    /// Show who holds and who awaits named locks.
    #[command(after_help = EXIT_CODES)]
    Status(status::StatusArgs),
    /// Have worker processes contend for named locks and check that the locks held.
    #[command(after_help = EXIT_CODES)]
    Demo(demo::DemoArgs),
    /// One worker process of `latchkey demo`.
    #[command(hide = true)]
    DemoWorker(demo::WorkerArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            // `--help` and `--version` go to stdout and succeed; every other clap error is
            // a usage error, 64 rather than clap's 2.
            let _ = err.print();
            return ExitCode::from(if err.exit_code() == 0 { 0 } else { EXIT_USAGE });
        }
    };
    let outcome = match cli.command {
        Command::Run(args) => run::run(args),
        Command::Status(args) => status::status(args),
        Command::Demo(args) => demo::demo(args),
        Command::DemoWorker(args) => demo::worker(args),
    };
    match outcome {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("latchkey: {err:#}");
            ExitCode::from(err.downcast_ref::<latchkey::Error>().map_or(EXIT_ERROR, exit_code))
        }
    }
}

/// The exit code for a latchkey error.
pub fn exit_code(err: &latchkey::Error) -> u8 {
    match err.kind() {
        ErrorKind::Timeout => EXIT_TIMEOUT,
        ErrorKind::InvalidName | ErrorKind::InvalidScope | ErrorKind::CapacityMismatch | ErrorKind::Unsupported => {
            EXIT_USAGE
        }
        _ => EXIT_ERROR,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn errors_map_to_documented_codes() {
        let code = |kind| exit_code(&latchkey::Error::new(kind, "x"));
        assert_eq!(code(ErrorKind::Timeout), 75);
        assert_eq!(code(ErrorKind::InvalidName), 64);
        assert_eq!(code(ErrorKind::InvalidScope), 64);
        assert_eq!(code(ErrorKind::CapacityMismatch), 64);
        assert_eq!(code(ErrorKind::PermissionDenied), 70);
        assert_eq!(code(ErrorKind::Corrupted), 70);
    }
}
