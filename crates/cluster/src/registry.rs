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
use crate::wire::{self, ToChild};
use crate::{Error, ErrorKind, Event, Events, Path, Reason, Result, WorkerRef};

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
    /// A process worker, told by frames queued on its link. Queued under the registry
    /// lock, an `Up` goes out before any message sent after the spawn that published it:
    /// a child knows every worker that a message it receives could mention.
    Child(Arc<Link<M>>),
}

impl<M> Registry<M> {
    pub(crate) fn new() -> Self {
        Registry { workers: BTreeMap::new(), subscribers: Vec::new(), closed: false, ended: false, last_segment: 0 }
    }

    /// The path a new worker at `path` gets: `path` itself, or, if it ends in `/`, `path`
    /// followed by a number no worker of this cluster had. Fails if the path is invalid or
    /// taken, or if the cluster is shutting down.
    pub(crate) fn claim(&mut self, path: &str) -> Result<Path> {
        if self.closed {
            return Err(
                Error::new(ErrorKind::Closed, "the cluster is shutting down; it takes no new workers").with_path(path)
            );
        }
        path::validate(path, true)?;
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

    /// Subscribes a process worker: frames for `Up` of every live worker now, then for
    /// every change, until its link is closed.
    pub(crate) fn subscribe_child(&mut self, link: Arc<Link<M>>) {
        if !self.ended {
            for cell in self.workers.values() {
                link.push(event_frame(cell, None));
            }
            self.subscribers.push(Subscriber::Child(link));
        }
    }

    /// Begins shutdown: no new workers from now on. The workers alive now.
    pub(crate) fn close(&mut self) -> Vec<Arc<Cell<M>>> {
        self.closed = true;
        self.workers.values().cloned().collect()
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
            Subscriber::Child(link) => link.push(event_frame(cell, reason)),
        });
    }
}

/// The frame that tells a child of the `Up` of `cell`, or its `Down` for `reason`.
fn event_frame<M>(cell: &Cell<M>, reason: Option<&Reason>) -> Vec<u8> {
    let (id, path) = (cell.id, cell.path.clone());
    let frame = match reason {
        None => ToChild::<()>::Up { id, path, props: cell.props.clone(), pid: cell.pid },
        Some(reason) => ToChild::Down { id, path, reason: reason.clone() },
    };
    wire::encode(&frame).expect("a frame without a message encodes")
}
