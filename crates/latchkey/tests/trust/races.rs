//! Issue 8's races found by reading, as tests of the public API: a capacity change racing
//! an open, and a waker that panics in the thread that serves async waits.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use latchkey::{ErrorKind, Scope};

use super::Dirs;
use crate::support::{runtime, wait_until};

/// Issue 8: a capacity change racing an open. Two threads open the same new name at once,
/// as a mutex and as a semaphore of 3: whichever open succeeds, its name keeps that
/// capacity for as long as the handle lives (a successful open never fails later with
/// `CapacityMismatch`), and the other open is refused.
#[test]
fn an_open_that_succeeds_keeps_its_capacity_whatever_opens_race_it() {
    let dirs = Dirs::new("latchkey-trust-capacity");
    let scope = Scope::open(&dirs.url()).unwrap();
    for i in 0..300 {
        let name = format!("race/{i}");
        let (mutex, semaphore) = std::thread::scope(|s| {
            let mutex = s.spawn(|| scope.mutex(&name));
            let semaphore = s.spawn(|| scope.semaphore(&name, 3));
            (mutex.join().unwrap(), semaphore.join().unwrap())
        });
        match (mutex, semaphore) {
            (Ok(mutex), Err(err)) => {
                assert_eq!(err.kind(), ErrorKind::CapacityMismatch, "{err}");
                drop(mutex.lock_blocking_timeout(Duration::from_secs(10)).expect("the open mutex can be locked"));
            }
            (Err(err), Ok(semaphore)) => {
                assert_eq!(err.kind(), ErrorKind::CapacityMismatch, "{err}");
                let guard = semaphore.acquire_blocking_timeout(3, Duration::from_secs(10));
                drop(guard.expect("the open semaphore can be taken whole"));
            }
            (mutex, semaphore) => panic!("{name}: exactly one open succeeds: {:?} {:?}", mutex.err(), semaphore.err()),
        }
    }
}

/// A waker whose `wake` panics.
struct Panics;

impl Wake for Panics {
    fn wake(self: Arc<Self>) {
        panic!("a waker that panics");
    }
}

/// Issue 8: a panic in the async multiplexer must not stop later async waits. An async
/// wait whose waker panics when the multiplexer wakes it; then another async wait, which
/// must still be woken.
#[test]
fn a_waker_that_panics_does_not_stop_later_async_waits() {
    let dirs = Dirs::new("latchkey-trust-panicking-waker");
    let scope = Scope::open(&dirs.url()).unwrap();
    let mutex = scope.mutex("m").unwrap();
    let held = mutex.lock_blocking().unwrap();
    {
        let waker = Waker::from(Arc::new(Panics));
        let mut first = pin!(mutex.lock());
        assert!(first.as_mut().poll(&mut Context::from_waker(&waker)).is_pending());
        assert_eq!(scope.inspect("m").unwrap().waiters, 1);
        drop(held);
        // The multiplexer wakes it (and the waker panics there); polled again, it has the lock.
        wait_until("the first wait to be granted", || {
            matches!(first.as_mut().poll(&mut Context::from_waker(&waker)), Poll::Ready(Ok(_)))
        });
    }
    let held = mutex.lock_blocking().unwrap();
    let rt = runtime();
    rt.block_on(async {
        let second = tokio::spawn({
            let scope = scope.clone();
            async move { scope.lock("m").await.map(drop) }
        });
        while scope.inspect("m").unwrap().waiters == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        drop(held);
        tokio::time::timeout(Duration::from_secs(30), second)
            .await
            .expect("a later async wait is still woken")
            .unwrap()
            .unwrap();
    });
}
