//! The receivers under test, one per contender, all doing the same work: count the
//! messages sent to them, and answer an ask for `n` with `n + count` (resetting the
//! count). An ask after a burst of sends thus acknowledges the whole burst (messages from
//! one sender arrive in order), and a plain ask is an echo (the count is 0).
//!
//! The message is a `u64` everywhere. Mailboxes: ours is the cluster default
//! ([`DEFAULT_MAILBOX_CAPACITY`], 1024, `send` waits while it is full); the raw Tokio
//! channel is bounded to the same 1024; ractor 0.16 has no bounded mailbox (its message
//! port is an unbounded channel and `cast` never waits), so it runs unbounded.

use std::future::Future;
use std::hint::black_box;
use std::mem;
use std::time::Duration;

use latchkey_cluster::{Cluster, Context, Props, WorkerRef, DEFAULT_MAILBOX_CAPACITY};
use ractor::rpc::CallResult;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::{mpsc, oneshot};

/// How long an ask may take before the benchmark gives up (ours and ractor alike).
const ASK_TIMEOUT: Duration = Duration::from_secs(5);

/// A receiver under test, seen from its sender.
pub trait Target: Send + Sync + 'static {
    /// Sends `n`, waiting for room if the mailbox is bounded and full.
    fn send(&self, n: u64) -> impl Future<Output = ()> + Send;
    /// Asks `n` and awaits the answer, `n` plus the sends counted since the last ask.
    fn ask(&self, n: u64) -> impl Future<Output = u64> + Send;
}

/// Ours: a task worker of a `latchkey-cluster` cluster, spawned from a registered entry.
pub struct Ours {
    /// Kept so that the worker can be shut down with its cluster.
    pub cluster: Cluster<u64>,
    worker: WorkerRef<u64>,
}

impl Ours {
    /// Builds a cluster (isolated lock scope, default mailbox) and spawns the counter.
    /// Runs within the runtime that will run the worker.
    pub async fn start() -> Ours {
        assert_eq!(DEFAULT_MAILBOX_CAPACITY, super::MAILBOX, "the mailbox bound of the peers follows ours");
        let cluster = Cluster::builder()
            .scope(latchkey::Scope::isolated())
            .entry("counter", counter)
            .build()
            .expect("cannot build the cluster");
        let worker = cluster.spawn("/bench/counter", Props::new(), "counter").await.expect("cannot spawn");
        Ours { cluster, worker }
    }
}

/// Our counter worker.
pub async fn counter(mut ctx: Context<u64>) -> Result<(), latchkey_cluster::Error> {
    let mut count = 0;
    while let Some(envelope) = ctx.recv().await {
        if envelope.is_ask() {
            let n = *envelope.message();
            envelope.reply(n + mem::take(&mut count))?;
        } else {
            black_box(envelope.into_message());
            count += 1;
        }
    }
    Ok(())
}

impl Target for Ours {
    async fn send(&self, n: u64) {
        self.worker.send(n).await.expect("send failed");
    }

    async fn ask(&self, n: u64) -> u64 {
        self.worker.ask(n, ASK_TIMEOUT).await.expect("ask failed")
    }
}

/// The ractor counter's messages: a `cast` carries a `u64`, a `call` a `u64` and the reply port.
pub enum RactorMsg {
    /// Counted.
    Cast(u64),
    /// Answered with `n + count`.
    Call(u64, RpcReplyPort<u64>),
}

/// The peer: a ractor actor (default features, unbounded mailbox).
pub struct Ractor {
    actor: ActorRef<RactorMsg>,
}

struct RactorCounter;

impl Actor for RactorCounter {
    type Msg = RactorMsg;
    type State = u64;
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<RactorMsg>, _: ()) -> Result<u64, ActorProcessingErr> {
        Ok(0)
    }

    async fn handle(&self, _: ActorRef<RactorMsg>, msg: RactorMsg, count: &mut u64) -> Result<(), ActorProcessingErr> {
        match msg {
            RactorMsg::Cast(n) => {
                black_box(n);
                *count += 1;
            }
            RactorMsg::Call(n, port) => port.send(n + mem::take(count))?,
        }
        Ok(())
    }
}

impl Ractor {
    /// Spawns the counter actor on the current runtime.
    pub async fn start() -> Ractor {
        let (actor, _handle) = Actor::spawn(None, RactorCounter, ()).await.expect("cannot spawn the actor");
        Ractor { actor }
    }

    /// Stops the actor.
    pub fn stop(&self) {
        self.actor.stop(None);
    }
}

impl Target for Ractor {
    async fn send(&self, n: u64) {
        self.actor.cast(RactorMsg::Cast(n)).unwrap_or_else(|_| panic!("cast failed"));
    }

    async fn ask(&self, n: u64) -> u64 {
        match self.actor.call(|port| RactorMsg::Call(n, port), Some(ASK_TIMEOUT)).await {
            Ok(CallResult::Success(answer)) => answer,
            Ok(_) | Err(_) => panic!("call failed"),
        }
    }
}

/// The floor's messages.
enum FloorMsg {
    Cast(u64),
    Ask(u64, oneshot::Sender<u64>),
}

/// The floor: a bounded Tokio channel (1024) drained by a task; an ask carries a
/// oneshot, and takes no timeout unless made by [`with_timeout`](Floor::with_timeout).
pub struct Floor {
    tx: mpsc::Sender<FloorMsg>,
    timeout: Option<Duration>,
}

impl Floor {
    /// Spawns the consumer task on the current runtime; it ends when every `Floor` on it
    /// is dropped.
    pub fn start() -> Floor {
        let (tx, mut rx) = mpsc::channel(super::MAILBOX);
        tokio::spawn(async move {
            let mut count = 0;
            while let Some(msg) = rx.recv().await {
                match msg {
                    FloorMsg::Cast(n) => {
                        black_box(n);
                        count += 1;
                    }
                    FloorMsg::Ask(n, reply) => {
                        let _ = reply.send(n + mem::take(&mut count));
                    }
                }
            }
        });
        Floor { tx, timeout: None }
    }

    /// The same consumer, asked within `tokio::time::timeout` as ours and ractor ask: the
    /// floor of an ask that can time out.
    pub fn with_timeout(&self) -> Floor {
        Floor { tx: self.tx.clone(), timeout: Some(ASK_TIMEOUT) }
    }
}

impl Target for Floor {
    async fn send(&self, n: u64) {
        self.tx.send(FloorMsg::Cast(n)).await.unwrap_or_else(|_| panic!("send failed"));
    }

    async fn ask(&self, n: u64) -> u64 {
        let (reply, answer) = oneshot::channel();
        let exchange = async {
            self.tx.send(FloorMsg::Ask(n, reply)).await.unwrap_or_else(|_| panic!("send failed"));
            answer.await.expect("no answer")
        };
        match self.timeout {
            None => exchange.await,
            Some(timeout) => tokio::time::timeout(timeout, exchange).await.expect("no answer in time"),
        }
    }
}
