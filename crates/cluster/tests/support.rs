//! What the suites share: a message type, a worker entry that obeys it, cluster builders,
//! and a guard against hangs.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use latchkey::Scope;
use latchkey_cluster::{Builder, Cluster, Context, Reply};
use serde::{Deserialize, Serialize};

/// Long enough never to pass in a healthy run; only catches hangs.
pub const HANG: Duration = Duration::from_secs(60);

/// A generous grace or timeout for things that must happen.
pub const LONG: Duration = Duration::from_secs(30);

/// What the test workers understand.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Msg {
    /// Recorded; an ask gets it back.
    Num(u64),
    /// Recorded; an ask gets it back.
    Text(String),
    /// Ask: how many `Num`/`Text` were recorded, as `Num`.
    Count,
    /// Ask: every recorded `Num` with its sender, as `Log`.
    Seen,
    /// The answer to `Seen`.
    Log(Vec<(Option<String>, u64)>),
    /// Ask: the value of a property, as `Text` (empty if unset).
    Prop(String),
    /// Ask: take the named mutex in the cluster's scope and keep it; replies `Text("locked")`.
    Lock(String),
    /// Ask: kept unanswered for as long as the worker lives.
    Hold,
    /// Ask: dropped unanswered.
    Drop,
    /// Stop receiving and wait forever (until killed).
    Hang,
    /// Panic.
    Panic,
    /// Return `Err` with this message.
    Fail(String),
    /// Return `Ok`.
    Quit,
}

/// The entry of the test workers: obeys [`Msg`] until its mailbox is closed and drained.
pub async fn worker(mut ctx: Context<Msg>) -> Result<(), String> {
    let mut log = Vec::new();
    let mut locks = Vec::new();
    let mut held: Vec<Reply<Msg>> = Vec::new();
    while let Some(mut envelope) = ctx.recv().await {
        let sender = envelope.sender().map(|p| p.to_string());
        let answer = match envelope.message().clone() {
            Msg::Num(n) => {
                log.push((sender, n));
                Msg::Num(n)
            }
            text @ Msg::Text(_) => {
                log.push((sender, u64::MAX));
                text
            }
            Msg::Count => Msg::Num(log.len() as u64),
            Msg::Seen => Msg::Log(log.iter().filter(|(_, n)| *n != u64::MAX).cloned().collect()),
            Msg::Prop(key) => Msg::Text(ctx.props().get(&key).unwrap_or_default().to_owned()),
            Msg::Lock(name) => {
                locks.push(ctx.scope().lock(&name).await.map_err(|e| e.to_string())?);
                Msg::Text("locked".to_owned())
            }
            Msg::Hold => {
                held.extend(envelope.take_reply());
                continue;
            }
            Msg::Drop => continue,
            Msg::Hang => std::future::pending().await,
            Msg::Panic => panic!("asked to panic"),
            Msg::Fail(message) => return Err(message),
            Msg::Quit => return Ok(()),
            Msg::Log(_) => continue,
        };
        if envelope.is_ask() {
            envelope.reply(answer).map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

/// A builder with the `worker` entry and a process scope of its own.
pub fn builder() -> Builder<Msg> {
    Cluster::builder().scope(Scope::isolated()).entry("worker", worker)
}

/// A cluster with the `worker` entry and a process scope of its own.
pub fn cluster() -> Cluster<Msg> {
    builder().build().expect("a cluster builds within a runtime")
}

/// A host scope in a new directory of its own (removed at once: the scope keeps its
/// namespace file mapped).
pub fn host_scope() -> Scope {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("latchkey-cluster-test-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let scope = Scope::open(&format!("host:{}", dir.display())).expect("the host scope opens in a new directory");
    let _ = std::fs::remove_dir_all(&dir);
    scope
}

/// Awaits `future`, failing the test if it hangs.
pub async fn within<T>(future: impl Future<Output = T>) -> T {
    tokio::time::timeout(HANG, future).await.expect("the operation hung")
}

/// Asks `worker` and unwraps the reply.
pub async fn ask(worker: &latchkey_cluster::WorkerRef<Msg>, message: Msg) -> Msg {
    within(worker.ask(message, LONG)).await.expect("the worker answers")
}
