//! The registry: live workers by path, and the subscribers to membership events.
//!
//! Every change of membership happens under the registry's lock, and its event is handed
//! to every subscriber under that same lock. So a new subscriber's snapshot and the live
//! events after it neither overlap nor leave a gap, and all subscribers see one order.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::cell::Cell;
use crate::link::Link;
use crate::path;
use crate::{Error, ErrorKind, Event, Events, Path, Reason, Result, WorkerRef};

/// The frame that tells another process of the `Up` of a worker, or its `Down` for a reason.
pub(crate) type EventFrame<M> = fn(&Cell<M>, Option<&Reason>) -> Vec<u8>;

pub(crate) struct Registry<M> {
    workers: BTreeMap<Path, Arc<Cell<M>>>,
    subscribers: Vec<Subscriber<M>>,
    /// Shutdown has begun: no new workers.
    closed: bool,
    /// Shutdown is complete: subscriptions have ended.
    ended: bool,
    /// The last number given to a path that ended in `/`.
    last_segment: u64,
}

enum Subscriber<M> {
    /// A subscription in this process.
    Local {
        tx: mpsc::UnboundedSender<Event<M>>,
        /// The worker that subscribed: references in its events send as that worker.
        me: Option<Path>,
    },
    /// Another process (a child, or another node), told by frames queued on its link.
    /// Queued under the registry lock, an `Up` goes out before any message sent after the
    /// spawn that published it: the other process knows every worker that a message it
    /// receives could mention. `only_ours`: of this process's own workers only (another
    /// node learns of the rest from their own nodes).
    Link { link: Arc<Link<M>>, frame: EventFrame<M>, only_ours: bool },
}

impl<M> Registry<M> {
    pub(crate) fn new() -> Self {
        Registry { workers: BTreeMap::new(), subscribers: Vec::new(), closed: false, ended: false, last_segment: 0 }
    }

    /// The path a new worker at `path` gets: `path` itself, or, if it ends in `/`, `path`
    /// followed by a number no worker of this cluster had. Fails if the path is invalid or
    /// taken, or if the cluster is shutting down.
    pub(crate) fn claim(&mut self, path: &str) -> Result<Path> {
        self.check_prefix(path)?;
        if !path.ends_with('/') {
            let path = Path::from_valid(path.to_owned());
            return match self.workers.contains_key(&path) {
                true => Err(Error::new(ErrorKind::DuplicatePath, format!("a live worker already has the path {path}"))
                    .with_path(path.as_str())),
                false => Ok(path),
            };
        }
        loop {
            self.last_segment += 1;
            let candidate = format!("{path}{}", self.last_segment);
            path::validate(&candidate, false)?;
            if !self.workers.contains_key(candidate.as_str()) {
                return Ok(Path::from_valid(candidate));
            }
        }
    }

    /// Whether a new worker could be given `path` or, if it ends in `/`, a path under it:
    /// the path is valid and the cluster is not shutting down.
    pub(crate) fn check_prefix(&self, path: &str) -> Result<()> {
        if self.closed {
            return Err(
                Error::new(ErrorKind::Closed, "the cluster is shutting down; it takes no new workers").with_path(path)
            );
        }
        path::validate(path, true)
    }

    /// Registers a worker whose path was claimed, and publishes its `Up`.
    pub(crate) fn insert(&mut self, cell: Arc<Cell<M>>) {
        self.publish(None, &cell);
        let previous = self.workers.insert(cell.path.clone(), cell);
        debug_assert!(previous.is_none(), "paths are claimed before they are inserted");
    }

    /// Unregisters a worker that has ended, and publishes its `Down`.
    pub(crate) fn remove(&mut self, cell: &Arc<Cell<M>>, reason: &Reason) {
        if self.workers.get(&cell.path).is_some_and(|c| Arc::ptr_eq(c, cell)) {
            self.workers.remove(&cell.path);
            self.publish(Some(reason), cell);
        }
    }

    /// The live worker at `path`.
    pub(crate) fn get(&self, path: &str) -> Option<&Arc<Cell<M>>> {
        self.workers.get(path)
    }

    /// The live workers strictly below `prefix`, in path order.
    pub(crate) fn under<'a>(&'a self, prefix: &str) -> impl Iterator<Item = &'a Arc<Cell<M>>> + 'a {
        let dir = match prefix.ends_with('/') {
            true => prefix.to_owned(),
            false => format!("{prefix}/"),
        };
        let start = self.workers.range::<str, _>((Bound::Included(dir.as_str()), Bound::Unbounded));
        start.take_while(move |(path, _)| path.starts_with(dir.as_str())).map(|(_, cell)| cell)
    }

    /// A new subscription: `Up` for every live worker now, then every change.
    pub(crate) fn subscribe(&mut self, me: Option<Path>) -> Events<M> {
        let (tx, rx) = mpsc::unbounded_channel();
        if !self.ended {
            for cell in self.workers.values() {
                let _ = tx.send(Event::Up(WorkerRef { cell: cell.clone(), from: me.clone() }));
            }
            self.subscribers.push(Subscriber::Local { tx, me });
        }
        Events::new(rx)
    }

    /// Subscribes another process: `frame`s for the `Up` of every live worker now (of
    /// ours only, if `only_ours`), then for every change, until its link is closed.
    pub(crate) fn subscribe_link(&mut self, link: Arc<Link<M>>, frame: EventFrame<M>, only_ours: bool) {
        if !self.ended {
            for cell in self.workers.values().filter(|cell| !only_ours || cell.is_ours()) {
                link.push(frame(cell, None));
            }
            self.subscribers.push(Subscriber::Link { link, frame, only_ours });
        }
    }

    /// The live workers reached over `link`.
    pub(crate) fn behind(&self, link: &Arc<Link<M>>) -> Vec<Arc<Cell<M>>> {
        self.workers.values().filter(|cell| cell.is_behind(link)).cloned().collect()
    }

    /// The live workers of this process.
    pub(crate) fn ours(&self) -> Vec<Arc<Cell<M>>> {
        self.workers.values().filter(|cell| cell.is_ours()).cloned().collect()
    }

    /// Begins shutdown: no new workers from now on. This process's workers alive now
    /// (another node's are its own to stop).
    pub(crate) fn close(&mut self) -> Vec<Arc<Cell<M>>> {
        self.closed = true;
        self.workers.values().filter(|cell| cell.is_ours()).cloned().collect()
    }

    /// Completes shutdown: every subscription ends after the events it has pending.
    pub(crate) fn end_subscriptions(&mut self) {
        self.ended = true;
        self.subscribers.clear();
    }

    /// Publishes the `Up` of `cell`, or its `Down` for `reason`.
    fn publish(&mut self, reason: Option<&Reason>, cell: &Arc<Cell<M>>) {
        // A subscriber whose `Events` was dropped, or whose link is closed, is forgotten here.
        self.subscribers.retain(|sub| match sub {
            Subscriber::Local { tx, me } => {
                let worker = WorkerRef { cell: cell.clone(), from: me.clone() };
                let event = match reason {
                    None => Event::Up(worker),
                    Some(reason) => Event::Down(worker, reason.clone()),
                };
                tx.send(event).is_ok()
            }
            Subscriber::Link { link, frame, only_ours } => {
                if *only_ours && !cell.is_ours() {
                    return !link.is_closed();
                }
                link.push(frame(cell, reason))
            }
        });
    }
}
