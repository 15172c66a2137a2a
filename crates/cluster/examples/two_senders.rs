//! The classic cluster demo: two senders and one receiver.
//!
//! The senders are spawned first, with an `id` property; the receiver after them, with a
//! `type` property. Each sender watches membership events until the receiver is `Up`,
//! then sends it a greeting. The receiver prints what it gets, holding a named lock while
//! it prints. Then the program shuts the cluster down and exits.
//!
//! ```text
//! cargo run -p latchkey-cluster --example two_senders
//! ```
//!
//! The workers are tasks of this process. (Child-process workers, `--process`, come with
//! the process worker kind: the entries are registered by name so that a child of the
//! same binary can start them.)

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
    println!("{} is up, type {:?}", ctx.path(), ctx.props().get("type").unwrap_or("?"));
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
}

impl Mode {
    fn from_args() -> Result<Mode, String> {
        match std::env::args().nth(1).as_deref() {
            None => Ok(Mode::Tasks),
            Some("--process") => Err("process workers are not built yet; run without --process".to_owned()),
            Some(other) => Err(format!("unknown argument {other:?}; usage: two_senders")),
        }
    }

    /// Where the locks live: tasks share this process's scope.
    fn scope(self) -> Scope {
        match self {
            Mode::Tasks => Scope::process(),
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
        }
    }
}

async fn run(mode: Mode) -> Result<(), BoxError> {
    let cluster = entries().scope(mode.scope()).build()?;
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

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let mode = match Mode::from_args() {
        Ok(mode) => mode,
        Err(message) => {
            eprintln!("two_senders: {message}");
            return ExitCode::from(2);
        }
    };
    match run(mode).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("two_senders: {err}");
            ExitCode::FAILURE
        }
    }
}
