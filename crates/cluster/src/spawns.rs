//! Spawns asked of another process: the table of the requests that await its answer.
//!
//! A process worker spawns through its parent (a child cannot start a worker itself: a
//! task worker runs on the parent's runtime, and process workers are the parent's
//! children, which die with it), and a node spawns on another node through their link.
//! Either sends a [`SpawnRequest`] and waits for the answer, which comes after the new
//! worker's `Up` on the same link (see `parent.rs`, `node/peer.rs`).
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
use crate::link::Link;
use crate::shared::{Registered, Shared, SpawnOf};
use crate::wire::{self, SpawnRequest, Spawned, WireError, WorkerKind};
use crate::{Error, ErrorKind, Message, Props, Result};

/// A request's answer, for the caller that waits for it.
type Answer<M> = oneshot::Sender<Result<Arc<Cell<M>>>>;

/// The spawns asked of another process over one link that await their answer.
pub(crate) struct Spawns<M> {
    /// By request id; `None` once the link is broken.
    pending: Mutex<Option<HashMap<u64, Answer<M>>>>,
    next: AtomicU64,
}

impl<M: Message> Spawns<M> {
    pub(crate) fn new() -> Self {
        Spawns { pending: Mutex::new(Some(HashMap::new())), next: AtomicU64::new(1) }
    }

    /// Asks the process at the other end of `link`, with the frame `frame` makes, to spawn
    /// a worker of `kind` at `path`; the worker, once this process's registry knows it.
    /// Dropping the future does not cancel the spawn: the other process may still start
    /// the worker.
    pub(crate) async fn request(
        &self,
        link: &Link<M>,
        frame: fn(&SpawnRequest) -> Result<Vec<u8>>,
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
        if let Err(err) = frame(&spawn).and_then(|bytes| wire::pushed(link, bytes)) {
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
    let message = "the link broke before the other process answered the spawn; it is gone";
    Error::new(ErrorKind::Closed, message).with_path(path)
}

/// Performs the spawn the process at the other end of `link` asked for, with this
/// process's spawner (which checks it as it checks its own spawns), and answers it with
/// the frames `answer` makes:
///
/// - a success under the registry lock, right after the new worker's `Up` was queued for
///   every subscribed link, so that the asker has applied that `Up` when its spawn
///   returns, and no `Down` of the worker can come first: the reference it returns is the
///   one a lookup finds, and can be messaged at once;
/// - a failure with the error's kind and message.
pub(crate) fn serve<M: Message>(
    shared: Arc<Shared<M>>,
    link: Arc<Link<M>>,
    spawn: SpawnRequest,
    answer: fn(u64, std::result::Result<Spawned, WireError>) -> Vec<u8>,
) {
    let SpawnRequest { request, path, props, entry, kind } = spawn;
    tokio::spawn(async move {
        let answering = link.clone();
        let registered: Registered<M> = Box::new(move |cell: &Arc<Cell<M>>| {
            let spawned = Spawned { id: cell.id, path: cell.path.clone(), props: cell.props.clone(), pid: cell.pid };
            answering.push(answer(request, Ok(spawned)));
        });
        let spawn = SpawnOf { kind, path: &path, props, entry: &entry };
        if let Err(err) = shared.spawner.spawn(&shared, spawn, registered).await {
            link.push(answer(request, Err(WireError::from(&err))));
        }
    });
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixStream;

    use super::*;
    use crate::wire::ToParent;

    fn to_parent(spawn: &SpawnRequest) -> Result<Vec<u8>> {
        wire::encode(&ToParent::<()>::Spawn(spawn.clone()))
    }

    #[tokio::test]
    async fn waiting_and_later_requests_fail_when_the_link_breaks() {
        let (ours, _theirs) = UnixStream::pair().unwrap();
        let (link, _read) = Link::<u64>::new(crate::parent::tongue(), ours, 4).unwrap();
        let spawns = Arc::new(Spawns::new());
        let waiting = tokio::spawn({
            let (spawns, link) = (spawns.clone(), link.clone());
            async move {
                let spawned = spawns.request(&link, to_parent, WorkerKind::Task, "/a", Props::new(), "worker").await;
                spawned.map(|_| ())
            }
        });
        while spawns.pending.lock().as_ref().is_some_and(HashMap::is_empty) {
            tokio::task::yield_now().await;
        }
        spawns.close();
        let err = waiting.await.unwrap().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Closed);
        assert_eq!(err.path(), Some("/a"));
        let later = spawns.request(&link, to_parent, WorkerKind::Process, "/b", Props::new(), "worker").await;
        assert_eq!(later.map(|_| ()).unwrap_err().kind(), ErrorKind::Closed);
    }
}
