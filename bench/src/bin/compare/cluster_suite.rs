//! Suite `cluster`: the cluster runtime (`latchkey-cluster`) against `ractor` and the raw
//! Tokio channels it is built from.
//!
//! In process, one sender messages one receiver that counts (see [`targets`]): a burst of
//! sends acknowledged by one ask (throughput), and ask round trips (an echo). Each case
//! runs once on a multi-thread Tokio runtime with 2 workers (this machine has 2 cores)
//! and once on a current-thread runtime; ours and the peers always share that runtime,
//! and the measured loop is a task of it (as a sending worker would be), timed inside.
//!
//! Across processes ([`child`]): an ask to a process worker against the raw Unix-socket
//! round trip, and the time from `SIGKILL` of a process worker to its `Down` event
//! against the time to the end of a raw socket. Between nodes ([`nodes`]): asks and sends
//! to a worker of another node against raw TCP on loopback, and the time from `SIGKILL` of
//! a node to the `Down(NodeLost)` of its worker.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use latchkey_bench::{alternate, Row};
use tokio::runtime::Runtime;

use targets::{Floor, Ours, Ractor, Target};

mod child;
mod nodes;
mod targets;

pub use child::cluster_builder;

/// Runs a child process of this suite if `args` name one; `false` otherwise.
pub fn child_main(args: &[String]) -> bool {
    child::child_main(args) || nodes::child_main(args)
}

/// Mailbox bound of ours (the cluster default) and of the raw channel.
pub const MAILBOX: usize = 1024;
/// Messages per round of a send burst.
const SEND_N: u64 = 200_000;
/// Round trips per round of the ask case.
const ASK_N: u64 = 20_000;

const RACTOR_CAST: &str = "ractor 0.16 cast (unbounded)";
const RACTOR_CALL: &str = "ractor 0.16 call (RpcReplyPort)";
const FLOOR_SEND: &str = "tokio mpsc(1024) + task (floor)";
const FLOOR_ASK: &str = "tokio mpsc(1024) + oneshot (floor)";
const FLOOR_ASK_TIMEOUT: &str = "same + tokio::time::timeout";

pub fn run(emit: &dyn Fn(Row)) {
    for flavor in [Flavor::MultiThread, Flavor::CurrentThread] {
        in_process(emit, flavor);
    }
    child::run(emit);
    nodes::run(emit);
}

fn row(case: &str, ours_ns: f64, peer: &str, peer_ns: f64) -> Row {
    Row { case: case.to_string(), ours_ns, peer: peer.to_string(), peer_ns }
}

/// The Tokio runtime a case runs on; ours and the peer always get the same one.
#[derive(Clone, Copy)]
enum Flavor {
    /// Multi-thread, 2 worker threads.
    MultiThread,
    /// Everything on the thread that calls `block_on`.
    CurrentThread,
}

impl Flavor {
    fn runtime(self) -> Runtime {
        let mut builder = match self {
            Flavor::MultiThread => {
                let mut builder = tokio::runtime::Builder::new_multi_thread();
                builder.worker_threads(2);
                builder
            }
            Flavor::CurrentThread => tokio::runtime::Builder::new_current_thread(),
        };
        builder.enable_all().build().expect("cannot build the runtime")
    }

    /// Appended to the case name.
    fn suffix(self) -> &'static str {
        match self {
            Flavor::MultiThread => "",
            Flavor::CurrentThread => "/current-thread",
        }
    }
}

/// The send and ask cases on one runtime flavor, ours against ractor and the floor.
fn in_process(emit: &dyn Fn(Row), flavor: Flavor) {
    let rt = flavor.runtime();
    let (ours, ractor) = rt.block_on(async { (Arc::new(Ours::start().await), Arc::new(Ractor::start().await)) });
    let floor = rt.block_on(async { Floor::start() });
    let floor_timeout = Arc::new(floor.with_timeout());
    let floor = Arc::new(floor);

    let case = format!("cluster/send/in-process{}", flavor.suffix());
    let (o, p) = alternate(|| measure(&rt, &ours, send_burst), || measure(&rt, &ractor, send_burst));
    emit(row(&case, o, RACTOR_CAST, p));
    let (o, p) = alternate(|| measure(&rt, &ours, send_burst), || measure(&rt, &floor, send_burst));
    emit(row(&case, o, FLOOR_SEND, p));

    let case = format!("cluster/ask/in-process{}", flavor.suffix());
    let (o, p) = alternate(|| measure(&rt, &ours, ask_round_trips), || measure(&rt, &ractor, ask_round_trips));
    emit(row(&case, o, RACTOR_CALL, p));
    let (o, p) = alternate(|| measure(&rt, &ours, ask_round_trips), || measure(&rt, &floor, ask_round_trips));
    emit(row(&case, o, FLOOR_ASK, p));
    // Ours and ractor bound every ask with a Tokio timer; this row shows what that costs.
    let (o, p) = alternate(|| measure(&rt, &ours, ask_round_trips), || measure(&rt, &floor_timeout, ask_round_trips));
    emit(row(&case, o, FLOOR_ASK_TIMEOUT, p));

    let report = rt.block_on(ours.cluster.shutdown(Duration::from_secs(1)));
    assert!(report.forced.is_empty(), "the counter worker had to be killed");
    ractor.stop();
}

/// Runs `op` against `target` as a task of `rt` and returns what it measured.
fn measure<T, F, Fut>(rt: &Runtime, target: &Arc<T>, op: F) -> f64
where
    T: Target,
    F: FnOnce(Arc<T>) -> Fut,
    Fut: Future<Output = f64> + Send + 'static,
{
    let task = rt.spawn(op(target.clone()));
    rt.block_on(task).expect("the measuring task failed")
}

/// [`SEND_N`] sends, then one ask that acknowledges them all; ns per message.
async fn send_burst<T: Target>(target: Arc<T>) -> f64 {
    let start = Instant::now();
    for i in 0..SEND_N {
        target.send(i).await;
    }
    let counted = target.ask(0).await;
    let elapsed = start.elapsed();
    assert_eq!(counted, SEND_N, "the receiver did not count every message");
    elapsed.as_nanos() as f64 / SEND_N as f64
}

/// [`ASK_N`] ask round trips; ns per round trip.
async fn ask_round_trips<T: Target>(target: Arc<T>) -> f64 {
    let start = Instant::now();
    for i in 0..ASK_N {
        assert_eq!(target.ask(i).await, i, "a wrong answer");
    }
    start.elapsed().as_nanos() as f64 / ASK_N as f64
}
