//! Futures dropped at cancellation points picked at random: what the cancellation tests of
//! every scope over a network do.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use crate::worker::Rng;

/// Polls `future` once, if it is not done.
pub async fn poll_once<F: Future>(mut future: Pin<&mut F>) -> Option<F::Output> {
    std::future::poll_fn(|cx| {
        Poll::Ready(match future.as_mut().poll(cx) {
            Poll::Ready(output) => Some(output),
            Poll::Pending => None,
        })
    })
    .await
}

/// Drops futures at cancellation points picked at random, and says where.
pub struct Canceller {
    /// The randomness that picks the points.
    pub rng: Rng,
    /// Where the last future was dropped.
    pub point: String,
}

impl Canceller {
    /// A canceller seeded from the clock (or `LATCHKEY_TEST_SEED`), printing its seed.
    pub fn from_clock(test: &str) -> Canceller {
        Canceller { rng: Rng::from_clock(test), point: String::new() }
    }

    /// Runs `future` to a cancellation point, and drops it there unless it completed:
    /// polled once, then given a random time of up to 10 ms on the scope's thread (this
    /// thread sleeps), then dropped (as when another branch of a `select!` wins) or polled
    /// once more first; or awaited with a timeout of 0 to 30 ms.
    pub async fn run<T>(&mut self, future: impl Future<Output = T>) -> Option<T> {
        let mut future = std::pin::pin!(future);
        let rng = &mut self.rng;
        if rng.below(3) < 2 {
            let micros = [0, 1, 10, 100, 1000, rng.below(10_000)][rng.below(6) as usize];
            let again = rng.below(2) == 0;
            self.point = format!("{micros} µs after its first poll{}", if again { ", polled again" } else { "" });
            if let Some(output) = poll_once(future.as_mut()).await {
                return Some(output);
            }
            std::thread::sleep(Duration::from_micros(micros));
            match again {
                true => poll_once(future.as_mut()).await,
                false => None,
            }
        } else {
            let millis = [0, 1, 2, 5, rng.below(30)][rng.below(5) as usize];
            self.point = format!("at a timeout of {millis} ms");
            tokio::time::timeout(Duration::from_millis(millis), future).await.ok()
        }
    }
}

/// Whether a lock call that ran to its end was granted; a failure other than a timeout
/// fails the test.
pub fn granted<G>(outcome: Option<latchkey_model::Result<G>>) -> Option<G> {
    match outcome? {
        Ok(guard) => Some(guard),
        Err(e) if e.kind() == latchkey_model::ErrorKind::Timeout => None,
        Err(e) => panic!("a lock call failed: {e}"),
    }
}
