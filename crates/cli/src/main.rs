//! `latchkey`: named locks from the shell. `run` runs a command while holding a lock,
//! `hold` holds one for the rest of a script, `status` shows who holds and who awaits
//! which lock, `demo` has worker processes contend for locks and checks that they held.

mod demo;
mod duration;
mod exit;
mod fds;
mod guard;
mod hold;
mod lock;
mod run;
mod signals;
mod status;
mod tree;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "latchkey",
    version,
    about = "Named locks shared by the processes of a machine: run a command under a lock, see who holds what.",
    after_help = exit::HELP,
    arg_required_else_help = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a command, and everything it starts, while holding a named lock.
    #[command(after_help = format!("{}\n\n{}\n\n{}", lock::KINDS, run::AFTER_HELP, exit::HELP))]
    Run(run::RunArgs),
    /// Take a named lock and hold it, in the background, until a process exits.
    #[command(after_help = format!("{}\n\n{}\n\n{}", hold::AFTER_HELP, lock::KINDS, exit::HELP))]
    Hold(hold::HoldArgs),
    /// Show who holds and who awaits named locks.
    #[command(after_help = exit::HELP)]
    Status(status::StatusArgs),
    /// Have worker processes contend for named locks and check that the locks held.
    #[command(after_help = exit::HELP)]
    Demo(demo::DemoArgs),
    /// One worker process of `latchkey demo`.
    #[command(hide = true)]
    DemoWorker(demo::WorkerArgs),
    /// The background process of `latchkey hold`.
    #[command(hide = true)]
    HoldInBackground(hold::HoldArgs),
    /// The guardian of the process tree of `latchkey run`'s command.
    #[command(hide = true)]
    GuardTree(guard::GuardArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            // `--help` and `--version` go to stdout and succeed; every other clap error is
            // a usage error, 64 rather than clap's 2.
            let _ = err.print();
            return ExitCode::from(if err.exit_code() == 0 { 0 } else { exit::USAGE });
        }
    };
    let outcome = match cli.command {
        Command::Run(args) => run::run(args),
        Command::Hold(args) => hold::hold(args),
        Command::Status(args) => status::status(args),
        Command::Demo(args) => demo::demo(args),
        Command::DemoWorker(args) => demo::worker(args),
        Command::HoldInBackground(args) => hold::hold_in_background(args),
        Command::GuardTree(args) => guard::guard(args),
    };
    match outcome {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("latchkey: {err:#}");
            ExitCode::from(exit::of_any(&err))
        }
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
}
