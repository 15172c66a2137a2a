//! Shared measuring code for the `compare` binary: timing loops, rounds, and the JSON
//! report line.

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// One comparison: ours and a peer, nanoseconds per operation.
pub struct Row {
    /// What was measured, e.g. `mutex/uncontended/resolved`.
    pub case: String,
    /// Ours, ns per operation (median of rounds).
    pub ours_ns: f64,
    /// The peer's name, e.g. `parking_lot::Mutex`.
    pub peer: String,
    /// The peer, ns per operation (median of rounds).
    pub peer_ns: f64,
}

impl Row {
    /// The row as one JSON object on one line.
    pub fn to_json(&self) -> String {
        format!(
            "{{\"case\":\"{}\",\"ours_ns\":{:.2},\"peer\":\"{}\",\"peer_ns\":{:.2},\"ratio\":{:.3}}}",
            self.case,
            self.ours_ns,
            self.peer,
            self.peer_ns,
            self.ours_ns / self.peer_ns
        )
    }

    /// The row as a line of a readable table.
    pub fn to_text(&self) -> String {
        format!(
            "{:<44} ours {:>10.1} ns  {:<34} {:>10.1} ns  ratio {:>6.2}",
            self.case,
            self.ours_ns,
            self.peer,
            self.peer_ns,
            self.ours_ns / self.peer_ns
        )
    }
}

/// Rounds per measurement; ours and the peer alternate, and the median is kept.
pub const ROUNDS: usize = 7;

/// Measures ns per operation of `op`, run `iters` times per round.
pub fn per_op(iters: u64, mut op: impl FnMut()) -> f64 {
    let start = Instant::now();
    for _ in 0..iters {
        op();
    }
    start.elapsed().as_nanos() as f64 / iters as f64
}

/// Runs two measurements in alternating rounds and returns their medians (ours, peer).
pub fn alternate(mut ours: impl FnMut() -> f64, mut peer: impl FnMut() -> f64) -> (f64, f64) {
    // Warm-up.
    ours();
    peer();
    let (mut a, mut b) = (Vec::with_capacity(ROUNDS), Vec::with_capacity(ROUNDS));
    for _ in 0..ROUNDS {
        a.push(ours());
        b.push(peer());
    }
    (median(a), median(b))
}

/// Runs one measurement alone (a warm-up, then [`ROUNDS`] rounds) and returns its median:
/// for a peer whose counterpart of ours does not exist yet.
pub fn rounds(mut f: impl FnMut() -> f64) -> f64 {
    f();
    median((0..ROUNDS).map(|_| f()).collect())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Polls a future that is expected to be ready at once, without a runtime.
pub fn now_or_never<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(futures_task::noop_waker_ref());
    match future.as_mut().poll(&mut cx) {
        Poll::Ready(output) => black_box(output),
        Poll::Pending => panic!("an uncontended acquire was not ready at once"),
    }
}

/// Runs `threads` threads that each call `op` `iters` times; ns per operation overall.
pub fn threads_per_op(threads: usize, iters: u64, op: impl Fn() + Sync) -> f64 {
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                for _ in 0..iters {
                    op();
                }
            });
        }
    });
    start.elapsed().as_nanos() as f64 / (threads as u64 * iters) as f64
}

/// A short stand-in for work done under a lock.
#[inline]
pub fn critical_section() {
    for i in 0..16u32 {
        black_box(i);
    }
}

/// A time budget hint for loops.
pub fn budget() -> Duration {
    Duration::from_millis(200)
}
