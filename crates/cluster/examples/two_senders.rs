//! The classic cluster demo: two senders and one receiver.
//!
//! The senders are spawned first, with an `id` property; the receiver after them, with a
//! `type` property. Each sender watches membership events until the receiver is `Up`,
//! then sends it a greeting. The receiver prints what it gets, holding a named lock while
//! it prints. Then the program shuts the cluster down and exits.
//!
//! ```text
//! cargo run -p latchkey-cluster --example two_senders              # workers are tasks
//! cargo run -p latchkey-cluster --example two_senders -- --process # workers are processes
//! ```
//!
//! Without a flag the workers are tasks of this process. With `--process` each is a
//! child process of this same executable: `main` first calls
//! [`child_main`](latchkey_cluster::child_main), which in a child runs the worker and
//! exits; the entries are registered by name so that the child finds them. The lock is
//! then taken in a `host:` scope that the processes share.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use latchkey::Scope;
use latchkey_cluster::{Builder, Cluster, Context, Event, Props, WorkerRef};
use serde::{Deserialize, Serialize};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What the workers say to each other.
#[derive(Debug, Serialize, Deserialize)]
enum Msg {
    Hello { id: String },
}

/// Prints every message it gets until it is asked to stop and its mailbox is empty.
async fn receiver(mut ctx: Context<Msg>) -> Result<(), BoxError> {
    let kind = ctx.props().get("type").unwrap_or("?");
    println!("{} is up in process {}, type {kind:?}", ctx.path(), std::process::id());
    while let Some(envelope) = ctx.recv().await {
        let _stdout = ctx.scope().lock("two-senders/stdout").await?;
        let from = envelope.sender().map_or("outside".to_owned(), |p| p.to_string());
        println!("{} got {:?} from {from}", ctx.path(), envelope.message());
    }
    println!("{} stops", ctx.path());
    Ok(())
}

/// Waits for the receiver to come up, sends it a greeting, and returns.
async fn sender(ctx: Context<Msg>) -> Result<(), BoxError> {
    let id = ctx.props().get("id").unwrap_or("?").to_owned();
    let mut events = ctx.events();
    while let Some(event) = events.next().await {
        if let Event::Up(worker) = event {
            if worker.props().get("type") == Some("receiver") {
                println!("{} (id {id}) sees {} up and says hello", ctx.path(), worker.path());
                worker.send(Msg::Hello { id }).await?;
                return Ok(());
            }
        }
    }
    Err("the cluster shut down before a receiver came up".into())
}

/// The entry points, registered by name.
fn entries() -> Builder<Msg> {
    Cluster::builder().entry("receiver", receiver).entry("sender", sender)
}

/// How the workers run.
#[derive(Clone, Copy, Debug)]
enum Mode {
    /// Tasks of this process.
    Tasks,
    /// Child processes of this executable.
    Processes,
}

impl Mode {
    fn from_args() -> Result<Mode, String> {
        match std::env::args().nth(1).as_deref() {
            None => Ok(Mode::Tasks),
            Some("--process") => Ok(Mode::Processes),
            Some(other) => Err(format!("unknown argument {other:?}; usage: two_senders [--process]")),
        }
    }

    /// Where the locks live: tasks share this process's scope; processes share a host
    /// scope in a directory of this run.
    fn scope(self) -> Result<Scope, BoxError> {
        match self {
            Mode::Tasks => Ok(Scope::process()),
            Mode::Processes => Ok(Scope::open(&format!("host:{}", scope_dir().display()))?),
        }
    }

    async fn spawn(
        self,
        cluster: &Cluster<Msg>,
        path: &str,
        props: Props,
        entry: &str,
    ) -> Result<WorkerRef<Msg>, BoxError> {
        match self {
            Mode::Tasks => Ok(cluster.spawn(path, props, entry).await?),
            Mode::Processes => Ok(cluster.spawn_process(path, props, entry).await?),
        }
    }
}

/// The directory of the host scope of a `--process` run.
fn scope_dir() -> PathBuf {
    std::env::temp_dir().join(format!("latchkey-two-senders-{}", std::process::id()))
}

async fn run(mode: Mode) -> Result<(), BoxError> {
    let cluster = entries().scope(mode.scope()?).build()?;
    let mut senders = Vec::new();
    for id in ["1", "2"] {
        senders.push(mode.spawn(&cluster, "/senders/", Props::from([("id", id)]), "sender").await?);
    }
    mode.spawn(&cluster, "/receiver", Props::from([("type", "receiver")]), "receiver").await?;
    for sender in &senders {
        println!("{} ended: {}", sender.path(), sender.join().await);
    }
    // The receiver drains its mailbox (both greetings are in it) and returns.
    let report = cluster.shutdown(Duration::from_secs(5)).await;
    println!("shut down: {} stopped, {} forced", report.stopped.len(), report.forced.len());
    Ok(())
}

/// Exits with 0 when the run went well, 1 when it failed, 2 on a bad argument.
fn main() -> ExitCode {
    // In a child started by `--process`, this runs its worker and exits.
    latchkey_cluster::child_main(entries());
    let mode = match Mode::from_args() {
        Ok(mode) => mode,
        Err(message) => {
            eprintln!("two_senders: {message}");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a Tokio runtime");
    let result = runtime.block_on(run(mode));
    if let Mode::Processes = mode {
        let _ = std::fs::remove_dir_all(scope_dir());
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("two_senders: {err}");
            ExitCode::FAILURE
        }
    }
}
