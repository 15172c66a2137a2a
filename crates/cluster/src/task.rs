//! Task workers: a worker that is a Tokio task of this process.
//!
//! One task per worker polls the worker's future, catches its panics, and drops it at
//! once when the worker is killed. The future, and with it every lock guard it holds, is
//! dropped before the worker's `Down` is published.

use std::any::Any;
use std::future::{poll_fn, Future};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;

use tokio::sync::mpsc;

use crate::cell::Cell;
use crate::entry::Start;
use crate::signal::Signal;
use crate::{Cluster, Context, Envelope, Message, Reason};

/// Starts the task of a registered worker.
pub(crate) fn start<M: Message>(
    cluster: &Cluster<M>,
    cell: Arc<Cell<M>>,
    inbox: mpsc::Receiver<Envelope<M>>,
    start: Start<M>,
) {
    let ctx = Context::new(cell.clone(), inbox, cluster.as_worker(cell.path.clone()));
    let shared = cluster.shared.clone();
    cluster.shared.runtime.spawn(async move {
        let reason = run(start, ctx, &cell.kill).await;
        shared.end(&cell, reason).await;
    });
}

/// Runs a worker to its end, or until `kill` fires; how it ended. Its future is dropped
/// before this returns.
pub(crate) async fn run<M>(start: Start<M>, ctx: Context<M>, kill: &Signal) -> Reason {
    let mut worker = match catch_unwind(AssertUnwindSafe(|| start(ctx))) {
        Ok(worker) => worker,
        Err(panic) => return Reason::Failed(panic_message(&*panic)),
    };
    let mut killed = pin!(kill.wait());
    let reason = poll_fn(|cx| {
        if killed.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Reason::Killed);
        }
        match catch_unwind(AssertUnwindSafe(|| worker.as_mut().poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(Ok(()))) => Poll::Ready(Reason::Normal),
            Ok(Poll::Ready(Err(message))) => Poll::Ready(Reason::Failed(message)),
            Err(panic) => Poll::Ready(Reason::Failed(panic_message(&*panic))),
        }
    })
    .await;
    // A destructor that panics must not keep the worker from going down.
    let _ = catch_unwind(AssertUnwindSafe(move || drop(worker)));
    reason
}

fn panic_message(panic: &(dyn Any + Send)) -> String {
    let message = match (panic.downcast_ref::<&str>(), panic.downcast_ref::<String>()) {
        (Some(s), _) => s,
        (_, Some(s)) => s.as_str(),
        _ => "a value that is not a string",
    };
    format!("panicked: {message}")
}
