//! The cases between nodes: `cluster/ask/node`, `cluster/send/node` and
//! `cluster/down-after-sigkill/node`.
//!
//! Two nodes join through a Redis server of their own (`latchkey_testkit::RedisServer`):
//! this process, and a node child ([`NODE_CHILD`]: this binary again) that runs a counter
//! worker ([`targets`](super::targets): an ask for `n` answers `n` plus the sends counted
//! since the last ask) and, beside it, a raw TCP server on loopback that does the same
//! with fixed-size frames: the peer, across the same process boundary. Ours and the peer
//! run on one 2-worker Tokio runtime here, their loops timed inside a task of it.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use latchkey_bench::{alternate, Row, ROUNDS};
use latchkey_cluster::{Cluster, Event, Props, Reason, WorkerRef};
use latchkey_testkit::RedisServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;

use super::{row, Flavor};

/// First argument of a node child: `__cluster-node URL`.
pub const NODE_CHILD: &str = "__cluster-node";
const SECRET: &str = "bench";
const CLUSTER: &str = "bench";
/// Bytes per raw frame: about an encoded small message with its envelope.
const FRAME: usize = 32;
/// Round trips per round of the ask case.
const ROUND_TRIPS: u64 = 5_000;
/// Messages per round of the send case.
const SENDS: u64 = 100_000;
const ASK_TIMEOUT: Duration = Duration::from_secs(10);

const RAW_ASK: &str = "raw TCP echo on loopback (tokio)";
const RAW_SEND: &str = "raw TCP frames on loopback (tokio, BufWriter)";
const RAW_EOF: &str = "raw: SIGKILL to TCP EOF";

/// A node of the benchmark's cluster in the store at `url`, with the counter entry.
fn node(url: &str) -> Cluster<u64> {
    Cluster::<u64>::builder()
        .scope(latchkey::Scope::isolated())
        .entry("counter", super::targets::counter)
        .join(url, CLUSTER)
        .secret(SECRET)
        .build()
        .expect("cannot build the node")
}

/// Runs a node child if `args` name it; `false` otherwise.
pub fn child_main(args: &[String]) -> bool {
    let [flag, url] = args else { return false };
    if flag != NODE_CHILD {
        return false;
    }
    let rt = Flavor::MultiThread.runtime();
    rt.block_on(async {
        let raw = TcpListener::bind("127.0.0.1:0").await.expect("cannot listen");
        let raw_addr = raw.local_addr().expect("an address");
        tokio::spawn(serve_raw(raw));
        let node = node(url);
        let me = node.joined().await.expect("cannot join");
        let path = format!("/counter/{}", me.incarnation);
        node.spawn(&path, Props::new(), "counter").await.expect("cannot spawn the counter");
        println!("ready {path} {raw_addr}");
        std::future::pending::<()>().await;
    });
    true
}

/// The raw peer: counts frames; a frame whose first byte is 1 is an ask for `n` (its next
/// eight bytes), answered with `n` plus the frames counted since the last ask.
async fn serve_raw(listener: TcpListener) {
    while let Ok((stream, _)) = listener.accept().await {
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let (mut read, mut write) = stream.into_split();
            let mut read = tokio::io::BufReader::new(&mut read);
            let (mut frame, mut count) = ([0u8; FRAME], 0u64);
            while read.read_exact(&mut frame).await.is_ok() {
                if frame[0] != 1 {
                    count += 1;
                    continue;
                }
                let n = u64::from_le_bytes(frame[1..9].try_into().expect("8 bytes")) + count;
                count = 0;
                if write.write_all(&n.to_le_bytes()).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// A node child, killed and reaped on drop.
struct NodeChild {
    child: Child,
    /// Its counter's path, and its raw server's address.
    path: String,
    raw: String,
}

impl NodeChild {
    fn spawn(url: &str) -> NodeChild {
        let exe = std::env::current_exe().expect("cannot find the compare binary");
        let mut child = Command::new(exe)
            .args([NODE_CHILD, url])
            .stdout(Stdio::piped())
            .spawn()
            .expect("cannot start a node child");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("its stdout")).read_line(&mut line).expect("its first line");
        let mut words = line.split_whitespace().skip(1);
        let (path, raw) = (words.next().expect("a path").to_owned(), words.next().expect("an address").to_owned());
        NodeChild { child, path, raw }
    }
}

impl Drop for NodeChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// This process's node, and the other's counter as it sees it.
struct Ours {
    cluster: Cluster<u64>,
    counter: WorkerRef<u64>,
}

impl Ours {
    async fn start(url: &str, other: &NodeChild) -> Ours {
        let cluster = node(url);
        cluster.joined().await.expect("cannot join");
        let counter = loop {
            if let Some(counter) = cluster.lookup(&other.path) {
                break counter;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        Ours { cluster, counter }
    }
}

/// The raw client: one connection to the child's raw server.
async fn raw_client(addr: &str) -> TcpStream {
    let stream = TcpStream::connect(addr).await.expect("cannot connect to the raw server");
    stream.set_nodelay(true).expect("nodelay");
    stream
}

async fn raw_ask(stream: &mut TcpStream, n: u64) -> u64 {
    let mut frame = [0u8; FRAME];
    frame[0] = 1;
    frame[1..9].copy_from_slice(&n.to_le_bytes());
    stream.write_all(&frame).await.expect("cannot write");
    let mut answer = [0u8; 8];
    stream.read_exact(&mut answer).await.expect("cannot read");
    u64::from_le_bytes(answer)
}

pub fn run(emit: &dyn Fn(Row)) {
    let redis = RedisServer::start();
    let url = redis.url("prefix=bench-nodes&ttl=2s");
    let rt = Flavor::MultiThread.runtime();
    let other = NodeChild::spawn(&url);
    let ours = rt.block_on(Ours::start(&url, &other));
    let mut raw = Some(rt.block_on(raw_client(&other.raw)));

    let counter = ours.counter.clone();
    let mut ours_ask = || {
        let counter = counter.clone();
        timed(&rt, async move {
            for i in 0..ROUND_TRIPS {
                assert_eq!(counter.ask(i, ASK_TIMEOUT).await.expect("an ask failed"), i);
            }
            ROUND_TRIPS
        })
    };
    let mut raw_asks = || {
        let mut stream = raw.take().expect("the stream is back after each round");
        let (ns, stream) = rt.block_on(async move {
            let start = Instant::now();
            for i in 0..ROUND_TRIPS {
                assert_eq!(raw_ask(&mut stream, i).await, i, "a wrong echo");
            }
            (start.elapsed().as_nanos() as f64 / ROUND_TRIPS as f64, stream)
        });
        raw = Some(stream);
        ns
    };
    let (o, p) = alternate(&mut ours_ask, &mut raw_asks);
    emit(row("cluster/ask/node", o, RAW_ASK, p));

    let counter = ours.counter.clone();
    let mut ours_send = || {
        let counter = counter.clone();
        timed(&rt, async move {
            for i in 0..SENDS {
                counter.send(i).await.expect("a send failed");
            }
            assert_eq!(counter.ask(0, ASK_TIMEOUT).await.expect("the ask failed"), SENDS, "every send counted");
            SENDS
        })
    };
    let mut raw_sends = || {
        let stream = raw.take().expect("the stream is back after each round");
        let (ns, stream) = rt.block_on(async move {
            let start = Instant::now();
            let mut writer = BufWriter::new(stream);
            let frame = [0u8; FRAME];
            for _ in 0..SENDS {
                writer.write_all(&frame).await.expect("cannot write");
            }
            writer.flush().await.expect("cannot flush");
            let mut stream = writer.into_inner();
            assert_eq!(raw_ask(&mut stream, 0).await, SENDS, "every frame counted");
            (start.elapsed().as_nanos() as f64 / SENDS as f64, stream)
        });
        raw = Some(stream);
        ns
    };
    let (o, p) = alternate(&mut ours_send, &mut raw_sends);
    emit(row("cluster/send/node", o, RAW_SEND, p));

    let (mut kills, mut eofs) = (Vec::with_capacity(ROUNDS), Vec::with_capacity(ROUNDS));
    let mut ours_kill = || {
        let ns = rt.block_on(down_after_sigkill(&ours.cluster, &url));
        kills.push(ns);
        ns
    };
    let mut raw_kill = || {
        let ns = rt.block_on(eof_after_sigkill(&url));
        eofs.push(ns);
        ns
    };
    let (o, p) = alternate(&mut ours_kill, &mut raw_kill);
    emit(row("cluster/down-after-sigkill/node", o, RAW_EOF, p));
    let max = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    emit(row("cluster/down-after-sigkill/node/max", max(&kills), RAW_EOF, max(&eofs)));
    drop(other);
    rt.block_on(ours.cluster.shutdown(Duration::from_secs(5)));
}

/// Runs `work` as a task of `rt`; ns per operation of the count it returns.
fn timed(rt: &Runtime, work: impl std::future::Future<Output = u64> + Send + 'static) -> f64 {
    let task = rt.spawn(async move {
        let start = Instant::now();
        let n = work.await;
        start.elapsed().as_nanos() as f64 / n as f64
    });
    rt.block_on(task).expect("the measuring task failed")
}

/// ns from `SIGKILL` of a node child to the `Down(NodeLost)` of its counter here.
async fn down_after_sigkill(cluster: &Cluster<u64>, url: &str) -> f64 {
    let victim = tokio::task::block_in_place(|| NodeChild::spawn(url));
    let mut events = cluster.events();
    loop {
        match events.next().await.expect("the events ended") {
            Event::Up(worker) if worker.path().as_str() == victim.path => break,
            _ => {}
        }
    }
    let start = Instant::now();
    // SAFETY: a plain system call on our child, not yet reaped.
    assert_eq!(unsafe { libc::kill(victim.child.id() as libc::pid_t, libc::SIGKILL) }, 0, "kill failed");
    loop {
        match events.next().await.expect("the events ended") {
            Event::Down(worker, reason) if worker.path().as_str() == victim.path => {
                assert_eq!(reason, Reason::NodeLost);
                return start.elapsed().as_nanos() as f64;
            }
            _ => {}
        }
    }
}

/// ns from `SIGKILL` of a node child to the end of a TCP connection to its raw server.
async fn eof_after_sigkill(url: &str) -> f64 {
    let victim = tokio::task::block_in_place(|| NodeChild::spawn(url));
    let mut stream = raw_client(&victim.raw).await;
    assert_eq!(raw_ask(&mut stream, 7).await, 7);
    let start = Instant::now();
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(victim.child.id() as libc::pid_t, libc::SIGKILL) }, 0, "kill failed");
    let mut byte = [0u8; 1];
    let ended = matches!(stream.read(&mut byte).await, Ok(0) | Err(_));
    let ns = start.elapsed().as_nanos() as f64;
    assert!(ended, "the connection to a killed node did not end");
    ns
}
