//! The child-process cases: `cluster/ask/child-process` and `cluster/down-after-sigkill`.
//!
//! The peer is an echo child: this binary again, started with the hidden first argument
//! [`ECHO_CHILD`], whose standard input is one end of a `UnixStream` pair. It echoes
//! fixed-size frames ([`FRAME`] bytes) until the stream ends. Ours is a process worker of
//! a cluster (this binary again, entered through `latchkey_cluster::child_main`) that
//! echoes asks; messages are `u64`s, postcard-encoded in length-prefixed frames.

use std::hint::black_box;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use std::path::PathBuf;
use std::time::Duration;

use latchkey::Scope;
use latchkey_bench::{alternate, per_op, Row, ROUNDS};
use latchkey_cluster::{Builder, Cluster, Context, Event, Props, Reason, WorkerRef};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Runtime;

use super::{row, Flavor};

/// First argument of an echo child: `__cluster-echo-child` (its stdin is the socket).
pub const ECHO_CHILD: &str = "__cluster-echo-child";
/// Bytes per frame, each way: about an encoded small message with its envelope.
const FRAME: usize = 32;
/// Round trips per round.
const ROUND_TRIPS: u64 = 10_000;
/// A hang guard only.
const ASK_TIMEOUT: Duration = Duration::from_secs(5);

const RAW_BLOCKING: &str = "raw UnixStream echo (blocking std)";
const RAW_TOKIO: &str = "raw UnixStream echo (tokio, 2 workers)";
const RAW_EOF: &str = "raw: SIGKILL to socket EOF";

/// The entry point of ours: a process worker that echoes asks.
async fn echo(mut ctx: Context<u64>) -> Result<(), latchkey_cluster::Error> {
    while let Some(envelope) = ctx.recv().await {
        let n = *envelope.message();
        envelope.reply(n)?;
    }
    Ok(())
}

/// The cluster of ours; `main` hands it to [`latchkey_cluster::child_main`] first, so
/// that this binary, started as a process worker, runs the entry instead.
pub fn cluster_builder() -> Builder<u64> {
    Cluster::builder().entry("echo", echo)
}

/// Ours: a cluster on a 2-worker runtime, in a fresh host namespace, with one echoing
/// process worker. Shut down, and its namespace removed, on drop.
struct Ours {
    rt: Runtime,
    cluster: Cluster<u64>,
    echo: WorkerRef<u64>,
    dir: PathBuf,
}

impl Ours {
    fn start() -> Ours {
        let dir = std::env::temp_dir().join(format!("latchkey-bench-cluster-{}", std::process::id()));
        let rt = Flavor::MultiThread.runtime();
        let scope = Scope::open(&format!("host:{}", dir.display())).expect("cannot open the bench namespace");
        let cluster = rt.block_on(async { cluster_builder().scope(scope).build() }).expect("cannot build the cluster");
        let echo = rt.block_on(cluster.spawn_process("/echo", Props::new(), "echo")).expect("cannot spawn");
        let mut ours = Ours { rt, cluster, echo, dir };
        ours.ask_round(10); // it is up and serving
        ours
    }

    /// ns per ask round trip, over `n` asks, timed inside a task of the runtime.
    fn ask_round(&mut self, n: u64) -> f64 {
        let echo = self.echo.clone();
        let task = self.rt.spawn(async move {
            let start = Instant::now();
            for i in 0..n {
                assert_eq!(echo.ask(i, ASK_TIMEOUT).await.expect("an ask failed"), i, "a wrong echo");
            }
            start.elapsed().as_nanos() as f64 / n as f64
        });
        self.rt.block_on(task).expect("the measuring task failed")
    }

    /// ns from `SIGKILL` of a fresh process worker to its `Down` at a subscriber.
    fn down_after_sigkill(&mut self) -> f64 {
        let cluster = self.cluster.clone();
        let task = self.rt.spawn(async move {
            let victim = cluster.spawn_process("/victims/", Props::new(), "echo").await.expect("cannot spawn");
            victim.ask(1, ASK_TIMEOUT).await.expect("the victim does not serve");
            let mut events = cluster.events();
            while events.try_next().is_some() {} // the members so far
            let pid = victim.pid().expect("a process worker has a pid") as libc::pid_t;
            let start = Instant::now();
            // SAFETY: a plain system call; the cluster has not reaped the child yet.
            assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0, "kill failed");
            loop {
                match events.next().await.expect("the events ended") {
                    Event::Down(worker, reason) if worker.path() == victim.path() => {
                        assert_eq!(reason, Reason::Killed);
                        return start.elapsed().as_nanos() as f64;
                    }
                    _ => {}
                }
            }
        });
        self.rt.block_on(task).expect("the measuring task failed")
    }
}

impl Drop for Ours {
    fn drop(&mut self) {
        let report = self.rt.block_on(self.cluster.shutdown(Duration::from_secs(5)));
        assert!(report.forced.is_empty(), "the echo worker did not stop: {:?}", report.forced);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn run(emit: &dyn Fn(Row)) {
    ask(emit);
    down_after_sigkill(emit);
}

/// Runs the echo child if `args` (the arguments after the program name) name it.
/// Returns `false` when they do not.
pub fn child_main(args: &[String]) -> bool {
    if args.first().map(String::as_str) != Some(ECHO_CHILD) {
        return false;
    }
    let fd = io::stdin().as_fd().try_clone_to_owned().expect("stdin is not open");
    let mut stream = UnixStream::from(fd);
    let mut frame = [0u8; FRAME];
    // Ends when the parent closes its end (or dies).
    while stream.read_exact(&mut frame).is_ok() && stream.write_all(&frame).is_ok() {}
    true
}

/// A running echo child and the parent's end of its socket. Killed and reaped on drop.
struct EchoChild {
    child: Child,
    stream: UnixStream,
}

impl EchoChild {
    fn spawn() -> EchoChild {
        let (stream, theirs) = UnixStream::pair().expect("cannot create a socket pair");
        let exe = std::env::current_exe().expect("cannot find the compare binary");
        let child = Command::new(exe)
            .arg(ECHO_CHILD)
            .stdin(Stdio::from(OwnedFd::from(theirs)))
            .spawn()
            .expect("cannot start the echo child");
        let mut echo = EchoChild { child, stream };
        round_trip(&mut echo.stream, 0); // it is up and serving
        echo
    }
}

impl Drop for EchoChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One blocking round trip of a frame that carries `i`.
fn round_trip(stream: &mut UnixStream, i: u64) {
    let mut frame = [0u8; FRAME];
    frame[..8].copy_from_slice(&i.to_le_bytes());
    stream.write_all(&frame).expect("cannot write to the echo child");
    stream.read_exact(&mut frame).expect("cannot read from the echo child");
    assert_eq!(frame[..8], i.to_le_bytes(), "a wrong echo");
}

/// `cluster/ask/child-process`: the raw round trip, blocking and on Tokio.
fn ask(emit: &dyn Fn(Row)) {
    let case = "cluster/ask/child-process";
    let mut echo = EchoChild::spawn();
    let mut blocking = || {
        let mut i = 0;
        per_op(ROUND_TRIPS, || {
            i += 1;
            round_trip(&mut echo.stream, black_box(i));
        })
    };
    let rt = Flavor::MultiThread.runtime();
    let async_echo = EchoChild::spawn();
    let async_stream = async_echo.stream.try_clone().expect("cannot clone the socket");
    async_stream.set_nonblocking(true).expect("cannot make the socket non-blocking");
    let mut async_stream = Some(rt.block_on(async { tokio::net::UnixStream::from_std(async_stream) }).unwrap());
    let mut on_tokio = || {
        let mut stream = async_stream.take().expect("the stream is back after each round");
        let task = rt.spawn(async move {
            let start = Instant::now();
            let mut frame = [0u8; FRAME];
            for i in 0..ROUND_TRIPS {
                frame[..8].copy_from_slice(&i.to_le_bytes());
                stream.write_all(&frame).await.expect("cannot write to the echo child");
                stream.read_exact(&mut frame).await.expect("cannot read from the echo child");
                assert_eq!(frame[..8], i.to_le_bytes(), "a wrong echo");
            }
            (start.elapsed().as_nanos() as f64 / ROUND_TRIPS as f64, stream)
        });
        let (ns, stream) = rt.block_on(task).expect("the measuring task failed");
        async_stream = Some(stream);
        ns
    };
    let mut ours = Ours::start();
    let mut ours = || ours.ask_round(ROUND_TRIPS);
    let (o, p) = alternate(&mut ours, &mut blocking);
    emit(row(case, o, RAW_BLOCKING, p));
    let (o, p) = alternate(&mut ours, &mut on_tokio);
    emit(row(case, o, RAW_TOKIO, p));
}

/// `cluster/down-after-sigkill`: how soon the parent can know that a child was killed.
fn down_after_sigkill(emit: &dyn Fn(Row)) {
    let case = "cluster/down-after-sigkill";
    let mut raw = Vec::with_capacity(ROUNDS);
    let mut peer = || {
        let ns = eof_after_sigkill();
        raw.push(ns);
        ns
    };
    let mut ours_start = Ours::start();
    let mut kills = Vec::with_capacity(ROUNDS);
    let mut ours = || {
        let ns = ours_start.down_after_sigkill();
        kills.push(ns);
        ns
    };
    let (o, p) = alternate(&mut ours, &mut peer);
    emit(row(case, o, RAW_EOF, p));
    let max = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    emit(row(&format!("{case}/max"), max(&kills), RAW_EOF, max(&raw)));
}

/// One kill: an echo child that serves is killed; ns from just before `kill(2)` to the
/// end of its socket at the parent (the kernel closes a dead process's descriptors).
fn eof_after_sigkill() -> f64 {
    let mut echo = EchoChild::spawn();
    let pid = echo.child.id() as libc::pid_t;
    let start = Instant::now();
    // SAFETY: a plain system call; the child has not been waited for, so `pid` is its.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0, "kill failed");
    let mut byte = [0u8; 1];
    let ended = match echo.stream.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() == io::ErrorKind::ConnectionReset,
    };
    let ns = start.elapsed().as_nanos() as f64;
    assert!(ended, "the socket of a killed child did not end");
    ns
}
