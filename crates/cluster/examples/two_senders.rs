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
//! # two nodes, joined through a store (etcd here; postgres://... or redis://... alike):
//! cargo run -p latchkey-cluster --features etcd --example two_senders -- --node etcd://127.0.0.1:2379/demo receiver &
//! cargo run -p latchkey-cluster --features etcd --example two_senders -- --node etcd://127.0.0.1:2379/demo senders
//! ```
//!
//! With `--node URL ROLE` this process is one node of a cluster kept in the store at
//! `URL`: the `receiver` node runs the receiver, which returns once it has both greetings;
//! the `senders` node runs the two senders, which see the receiver come up on the other
//! node and greet it there. The lock is taken in the store, so it is the cluster's. The
//! nodes share the secret in `LATCHKEY_CLUSTER_SECRET` (default: the example's own).
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

/// Prints every message it gets until it is asked to stop and its mailbox is empty (or,
/// with an `expect` property, until it has that many).
async fn receiver(mut ctx: Context<Msg>) -> Result<(), BoxError> {
    let kind = ctx.props().get("type").unwrap_or("?");
    let expect: Option<usize> = ctx.props().get("expect").and_then(|n| n.parse().ok());
    println!("{} is up in process {}, type {kind:?}", ctx.path(), std::process::id());
    let mut got = 0;
    while let Some(envelope) = ctx.recv().await {
        let _stdout = ctx.scope().lock("two-senders/stdout").await?;
        let from = envelope.sender().map_or("outside".to_owned(), |p| p.to_string());
        println!("{} got {:?} from {from}", ctx.path(), envelope.message());
        got += 1;
        if Some(got) == expect {
            break;
        }
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
#[derive(Clone, Debug)]
enum Mode {
    /// Tasks of this process.
    Tasks,
    /// Child processes of this executable.
    Processes,
    /// A node of a cluster kept in the store at the URL, in the role given.
    Node { url: String, role: Role },
}

/// What a node of `--node` runs.
#[derive(Clone, Copy, Debug)]
enum Role {
    Receiver,
    Senders,
}

const USAGE: &str = "usage: two_senders [--process | --node URL receiver|senders]";

impl Mode {
    fn from_args() -> Result<Mode, String> {
        let args: Vec<String> = std::env::args().skip(1).collect();
        match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
            [] => Ok(Mode::Tasks),
            ["--process"] => Ok(Mode::Processes),
            ["--node", url, "receiver"] => Ok(Mode::Node { url: url.to_string(), role: Role::Receiver }),
            ["--node", url, "senders"] => Ok(Mode::Node { url: url.to_string(), role: Role::Senders }),
            other => Err(format!("unknown arguments {other:?}; {USAGE}")),
        }
    }

    /// Where the locks live: tasks share this process's scope; processes share a host
    /// scope in a directory of this run.
    fn scope(&self) -> Result<Scope, BoxError> {
        match self {
            Mode::Tasks => Ok(Scope::process()),
            Mode::Processes => Ok(Scope::open(&format!("host:{}", scope_dir().display()))?),
            Mode::Node { url, .. } => Ok(Scope::open(url)?),
        }
    }

    async fn spawn(
        &self,
        cluster: &Cluster<Msg>,
        path: &str,
        props: Props,
        entry: &str,
    ) -> Result<WorkerRef<Msg>, BoxError> {
        match self {
            Mode::Tasks | Mode::Node { .. } => Ok(cluster.spawn(path, props, entry).await?),
            Mode::Processes => Ok(cluster.spawn_process(path, props, entry).await?),
        }
    }
}

/// The directory of the host scope of a `--process` run.
fn scope_dir() -> PathBuf {
    std::env::temp_dir().join(format!("latchkey-two-senders-{}", std::process::id()))
}

async fn run(mode: Mode, scope: Scope) -> Result<(), BoxError> {
    if let Mode::Node { url, role } = &mode {
        return run_node(url, *role, scope).await;
    }
    let cluster = entries().scope(scope).build()?;
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

/// One node of a cluster in the store at `url`: the receiver's, or the senders'.
async fn run_node(url: &str, role: Role, scope: Scope) -> Result<(), BoxError> {
    let secret = std::env::var("LATCHKEY_CLUSTER_SECRET").unwrap_or_else(|_| "the two senders' example".to_owned());
    let cluster = entries().scope(scope).join(url, "two-senders").secret(secret).build()?;
    let node = cluster.joined().await?;
    println!("node {node} joined, as the {role:?} node");
    let workers = match role {
        Role::Receiver => {
            let props = Props::from([("type", "receiver"), ("expect", "2")]);
            vec![cluster.spawn("/receiver", props, "receiver").await?]
        }
        Role::Senders => {
            let mut senders = Vec::new();
            for id in ["1", "2"] {
                senders.push(cluster.spawn("/senders/", Props::from([("id", id)]), "sender").await?);
            }
            senders
        }
    };
    for worker in &workers {
        println!("{} ended: {}", worker.path(), worker.join().await);
    }
    let report = cluster.shutdown(Duration::from_secs(5)).await;
    println!("node {node} left: {} stopped, {} forced", report.stopped.len(), report.forced.len());
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
    let scope = match mode.scope() {
        Ok(scope) => scope,
        Err(err) => {
            eprintln!("two_senders: {err}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a Tokio runtime");
    let result = runtime.block_on(run(mode.clone(), scope));
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
