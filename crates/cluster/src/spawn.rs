//! Spawns from inside a process worker, which its parent performs.
//!
//! A child cannot start a worker itself: a task worker runs on the parent's runtime, and
//! process workers are the parent's children, which die with it. So a child's
//! [`spawn`](crate::Cluster::spawn) and [`spawn_process`](crate::Cluster::spawn_process)
//! send a [`SpawnRequest`] and wait for the answer. The parent spawns with its own
//! cluster, which checks the request as it checks its own spawns, and answers:
//!
//! - a success under its registry lock, right after the new worker's `Up` was queued
//!   for every child, so that the child has applied that `Up` when its spawn returns,
//!   and no `Down` of the worker can come first: the reference it returns is the one a
//!   lookup finds, and can be messaged at once;
//! - a failure with the error's kind and message.
//!
//! If the link to the parent breaks, every request still waiting fails at once with
//! [`Closed`](crate::ErrorKind::Closed), and so does every later one. A closure
//! ([`spawn_fn`](crate::Cluster::spawn_fn)) cannot cross to the parent: a child refuses
//! it with [`Unsupported`](crate::ErrorKind::Unsupported).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::cell::Cell;
use crate::cluster::Shared;
use crate::link::Link;
use crate::wire::{self, SpawnRequest, Spawned, ToChild, ToParent, WireError, WorkerKind};
use crate::{Cluster, Error, ErrorKind, Message, Props, Result};

/// A request's answer, for the caller that waits for it.
type Answer<M> = oneshot::Sender<Result<Arc<Cell<M>>>>;

/// Inside a process worker: the spawns asked of the parent that await their answer.
pub(crate) struct Spawns<M> {
    /// By request id; `None` once the link to the parent is broken.
    pending: Mutex<Option<HashMap<u64, Answer<M>>>>,
    next: AtomicU64,
}

impl<M: Message> Spawns<M> {
    pub(crate) fn new() -> Self {
        Spawns { pending: Mutex::new(Some(HashMap::new())), next: AtomicU64::new(1) }
    }

    /// Asks the parent, over `link`, to spawn a worker of `kind` at `path`; the worker,
    /// once this process's registry knows it. Dropping the future does not cancel the
    /// spawn: the parent may still start the worker.
    pub(crate) async fn request(
        &self,
        link: &Link<M>,
        kind: WorkerKind,
        path: &str,
        props: Props,
        entry: &str,
    ) -> Result<Arc<Cell<M>>> {
        let request = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        match self.pending.lock().as_mut() {
            Some(pending) => pending.insert(request, tx),
            None => return Err(broken(path)),
        };
        let spawn = SpawnRequest { request, path: path.to_owned(), props, entry: entry.to_owned(), kind };
        if let Err(err) = link.send(&ToParent::<()>::Spawn(spawn)) {
            self.take(request);
            return Err(err.with_path(path));
        }
        // The sender is dropped unanswered only when the link breaks.
        rx.await.unwrap_or_else(|_| Err(broken(path)))
    }

    /// Hands the answer to request `request` to its caller, if it still waits.
    pub(crate) fn answer(&self, request: u64, result: Result<Arc<Cell<M>>>) {
        if let Some(tx) = self.take(request) {
            let _ = tx.send(result);
        }
    }

    /// The link to the parent is broken: every waiting request fails, and every later one.
    pub(crate) fn close(&self) {
        drop(self.pending.lock().take());
    }

    fn take(&self, request: u64) -> Option<Answer<M>> {
        self.pending.lock().as_mut().and_then(|pending| pending.remove(&request))
    }
}

fn broken(path: &str) -> Error {
    let message = "the link to the parent broke before it answered the spawn; the parent is gone";
    Error::new(ErrorKind::Closed, message).with_path(path)
}

/// In the parent: performs the spawn a child asked for over `link`, and answers it.
pub(crate) fn serve<M: Message>(shared: Arc<Shared<M>>, link: Arc<Link<M>>, spawn: SpawnRequest) {
    let SpawnRequest { request, path, props, entry, kind } = spawn;
    tokio::spawn(async move {
        let answer = link.clone();
        // Called under the registry lock, right after the worker's `Up` was queued for
        // every child, the asker included: the answer follows it on the link, and the
        // worker's `Down` cannot come between them.
        let registered = move |cell: &Arc<Cell<M>>| {
            let spawned = Spawned { id: cell.id, path: cell.path.clone(), props: cell.props.clone(), pid: cell.pid };
            answer.push(answer_frame(request, Ok(spawned)));
        };
        let spawned = Cluster::new(shared).spawn_here(kind, &path, props, &entry, registered).await;
        if let Err(err) = spawned {
            link.push(answer_frame(request, Err(WireError::from(&err))));
        }
    });
}

/// The frame that answers request `request`; an answer too long for a frame becomes a
/// [`Codec`](ErrorKind::Codec) error, so that every request is answered.
fn answer_frame(request: u64, result: std::result::Result<Spawned, WireError>) -> Vec<u8> {
    wire::encode(&ToChild::<()>::Spawned { request, result }).unwrap_or_else(|err| {
        let result = Err(WireError::from(&err));
        wire::encode(&ToChild::<()>::Spawned { request, result }).expect("a short error encodes")
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixStream;

    use super::*;
    use crate::link::End;

    #[tokio::test]
    async fn waiting_and_later_requests_fail_when_the_link_breaks() {
        let (ours, _theirs) = UnixStream::pair().unwrap();
        let (link, _read) = Link::<u64>::new(End::Child, ours, 4).unwrap();
        let spawns = Arc::new(Spawns::new());
        let waiting = tokio::spawn({
            let (spawns, link) = (spawns.clone(), link.clone());
            async move { spawns.request(&link, WorkerKind::Task, "/a", Props::new(), "worker").await.map(|_| ()) }
        });
        while spawns.pending.lock().as_ref().is_some_and(HashMap::is_empty) {
            tokio::task::yield_now().await;
        }
        spawns.close();
        let err = waiting.await.unwrap().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Closed);
        assert_eq!(err.path(), Some("/a"));
        let later = spawns.request(&link, WorkerKind::Process, "/b", Props::new(), "worker").await;
        assert_eq!(later.map(|_| ()).unwrap_err().kind(), ErrorKind::Closed);
    }

    #[test]
    fn an_answer_too_long_for_a_frame_is_still_an_answer() {
        let huge = "x".repeat(wire::MAX_FRAME);
        let err = Error::new(ErrorKind::UnknownEntry, huge);
        let frame = answer_frame(7, Err(WireError::from(&err)));
        let answer = wire::decode::<ToChild<u64>>(&frame[4..]).unwrap();
        let ToChild::Spawned { request: 7, result: Err(err) } = answer else { panic!("{answer:?}") };
        assert_eq!(Error::from(err).kind(), ErrorKind::Codec);
    }
}
