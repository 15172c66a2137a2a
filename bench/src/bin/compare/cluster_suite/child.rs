//! The child-process cases: `cluster/ask/child-process` and `cluster/down-after-sigkill`.
//!
//! The peer side is measured now against an echo child: this binary again, started with
//! the hidden first argument [`ECHO_CHILD`], whose standard input is one end of a
//! `UnixStream` pair. It echoes fixed-size frames ([`FRAME`] bytes) until the stream
//! ends. Ours needs process workers in `latchkey-cluster`, which do not exist yet: until
//! [`ours_child_ask`] and [`ours_down_after_sigkill`] return a measurement, each case
//! prints a note on stderr with the peer's figure and emits no row.

use std::hint::black_box;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use latchkey_bench::{alternate, per_op, rounds, Row, ROUNDS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{row, Flavor};

/// First argument of an echo child: `__cluster-echo-child` (its stdin is the socket).
pub const ECHO_CHILD: &str = "__cluster-echo-child";
/// Bytes per frame, each way: about an encoded small message with its envelope.
const FRAME: usize = 32;
/// Round trips per round.
const ROUND_TRIPS: u64 = 10_000;

const RAW_BLOCKING: &str = "raw UnixStream echo (blocking std)";
const RAW_TOKIO: &str = "raw UnixStream echo (tokio, 2 workers)";
const RAW_EOF: &str = "raw: SIGKILL to socket EOF";

/// A measurement of ours: one round, in ns.
type Measure = Box<dyn FnMut() -> f64>;

/// Ours: ns per ask round trip to a child-process worker that echoes.
///
/// To plug in once process workers exist: build a cluster whose echo entry is registered
/// (the counter of `targets.rs`), let `main` hand the child's hidden arguments to the
/// cluster before anything else (next to [`child_main`]), spawn the worker as a child
/// process on a 2-worker runtime, and return `Some` of a closure running
/// `super::measure(&rt, &worker, super::ask_round_trips)` (with `WorkerRef` as a
/// `Target`, like `Ours`).
fn ours_child_ask() -> Option<Measure> {
    None
}

/// Ours: ns from `SIGKILL` of a child-process worker to its `Down` event at a
/// subscriber (target: under 10 ms).
///
/// To plug in: spawn a process worker, subscribe to events and skip its `Up`, take the
/// time, `kill(pid, SIGKILL)` (its pid from the worker reference), await
/// `Event::Down(_, Reason::Killed)`, and return the elapsed ns; one worker per round,
/// like [`eof_after_sigkill`].
fn ours_down_after_sigkill() -> Option<Measure> {
    None
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
    match ours_child_ask() {
        Some(mut ours) => {
            let (o, p) = alternate(&mut ours, &mut blocking);
            emit(row(case, o, RAW_BLOCKING, p));
            let (o, p) = alternate(&mut ours, &mut on_tokio);
            emit(row(case, o, RAW_TOKIO, p));
        }
        None => {
            let (b, t) = alternate(&mut blocking, &mut on_tokio);
            eprintln!(
                "note: {case}: raw unix-socket round trip ({FRAME}-byte frames): {b:.1} ns blocking, \
                 {t:.1} ns on tokio; ours: process workers not built yet"
            );
        }
    }
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
    match ours_down_after_sigkill() {
        Some(mut ours) => {
            let (o, p) = alternate(&mut ours, &mut peer);
            emit(row(case, o, RAW_EOF, p));
        }
        None => {
            let median = rounds(&mut peer);
            let max = raw.iter().copied().fold(0.0, f64::max);
            eprintln!(
                "note: {case}: {RAW_EOF}: {median:.0} ns (median), {max:.0} ns (max of {} kills); \
                 ours: process workers not built yet",
                raw.len()
            );
        }
    }
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
