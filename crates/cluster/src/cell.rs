//! The record each worker shares with its references and the cluster, and how messages
//! reach it: one mailbox variant per kind of worker.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::link::{Link, Refused};
use crate::signal::Signal;
use crate::wire::{self, ToChild, ToParent};
use crate::{Envelope, Error, ErrorKind, Message, Path, Props, Reason, Result};

/// What a worker shares with its references and the cluster.
pub(crate) struct Cell<M> {
    /// Unique among the workers of a cluster: a path is not (it is free again once its
    /// worker is down).
    pub(crate) id: u64,
    pub(crate) path: Path,
    pub(crate) props: Props,
    /// The process id of a process worker.
    pub(crate) pid: Option<u32>,
    mailbox: Mailbox<M>,
    /// Set when the worker is asked to stop, and when it ends: intake is closed.
    pub(crate) stopping: Signal,
    /// Set to end the worker at once.
    pub(crate) kill: Signal,
    /// Set once the worker has ended, its locks are free, and its `Down` is published.
    pub(crate) done: Signal,
    reason: OnceLock<Reason>,
}

/// How messages reach a worker: one variant per kind of worker.
enum Mailbox<M> {
    /// A task of this process: its bounded channel; messages are moved, not encoded.
    Task(mpsc::Sender<Envelope<M>>),
    /// A child process, seen from its parent: messages are encoded and written to its
    /// socket, at most a mailbox's worth of them not yet received by the worker.
    Process(Arc<Link<M>>),
    /// A worker of another process, seen from inside a child: messages go to the parent,
    /// which forwards them.
    Routed(Arc<Link<M>>),
}

/// A new worker id.
pub(crate) fn next_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

impl<M: Message> Cell<M> {
    fn new(id: u64, path: Path, props: Props, pid: Option<u32>, mailbox: Mailbox<M>) -> Cell<M> {
        let (stopping, kill, done) = Default::default();
        Cell { id, path, props, pid, mailbox, stopping, kill, done, reason: OnceLock::new() }
    }

    /// The record of a task worker, and the receiving end of its mailbox.
    pub(crate) fn task(id: u64, path: Path, props: Props, capacity: usize) -> (Cell<M>, mpsc::Receiver<Envelope<M>>) {
        let (tx, rx) = mpsc::channel(capacity);
        (Cell::new(id, path, props, None, Mailbox::Task(tx)), rx)
    }

    /// The record of a child process, seen from its parent.
    pub(crate) fn process(path: Path, props: Props, pid: u32, link: Arc<Link<M>>) -> Cell<M> {
        Cell::new(next_id(), path, props, Some(pid), Mailbox::Process(link))
    }

    /// The record of a worker of another process, seen from inside a child.
    pub(crate) fn routed(id: u64, path: Path, props: Props, pid: Option<u32>, link: Arc<Link<M>>) -> Cell<M> {
        Cell::new(id, path, props, pid, Mailbox::Routed(link))
    }

    /// Puts `envelope` in the mailbox, waiting for room; gives it back if intake is closed.
    pub(crate) async fn deliver(&self, envelope: Envelope<M>) -> Result<(), (Error, Envelope<M>)> {
        if self.stopping.is_fired() {
            return Err((self.closed(), envelope));
        }
        match &self.mailbox {
            Mailbox::Task(tx) => tx.send(envelope).await.map_err(|e| (self.closed(), e.0)),
            Mailbox::Process(link) | Mailbox::Routed(link) => {
                let (ask, bytes) = match link.prepare(&envelope, |ask| self.frame(ask, &envelope)) {
                    Ok(prepared) => prepared,
                    Err(err) => return Err((err.with_path(self.path.as_str()), envelope)),
                };
                if let Err(refused) = link.acquire().await {
                    return Err((self.refused(refused, link), envelope));
                }
                link.commit(ask, bytes, envelope);
                Ok(())
            }
        }
    }

    /// Puts `envelope` in the mailbox if there is room; gives it back otherwise.
    pub(crate) fn try_deliver(&self, envelope: Envelope<M>) -> Result<(), (Error, Envelope<M>)> {
        if self.stopping.is_fired() {
            return Err((self.closed(), envelope));
        }
        match &self.mailbox {
            Mailbox::Task(tx) => tx.try_send(envelope).map_err(|e| match e {
                mpsc::error::TrySendError::Full(envelope) => (self.full(tx.max_capacity(), "mailbox"), envelope),
                mpsc::error::TrySendError::Closed(envelope) => (self.closed(), envelope),
            }),
            Mailbox::Process(link) | Mailbox::Routed(link) => {
                let (ask, bytes) = match link.prepare(&envelope, |ask| self.frame(ask, &envelope)) {
                    Ok(prepared) => prepared,
                    Err(err) => return Err((err.with_path(self.path.as_str()), envelope)),
                };
                if let Err(refused) = link.try_acquire() {
                    return Err((self.refused(refused, link), envelope));
                }
                link.commit(ask, bytes, envelope);
                Ok(())
            }
        }
    }

    /// Puts a message that came from the parent process in a child's own mailbox, even
    /// if a stop was requested since (its sender got past the check in the parent): the
    /// worker receives it before its `recv` ends, like a task worker's late message.
    pub(crate) fn push_local(&self, envelope: Envelope<M>) -> Result<(), Envelope<M>> {
        match &self.mailbox {
            Mailbox::Task(tx) => tx.try_send(envelope).map_err(|e| e.into_inner()),
            _ => Err(envelope),
        }
    }

    /// The frame that carries `envelope` to this worker's process.
    fn frame(&self, ask: Option<u64>, envelope: &Envelope<M>) -> Result<Vec<u8>> {
        let (from, message) = (envelope.sender().cloned(), envelope.message());
        match &self.mailbox {
            Mailbox::Routed(_) => wire::encode(&ToParent::Send { to: self.path.clone(), id: self.id, ask, message }),
            _ => wire::encode(&ToChild::Deliver { from, ask, message }),
        }
    }

    /// Asks the worker to stop: closes intake.
    pub(crate) fn request_stop(&self) {
        if self.stopping.fire() {
            self.route(ToParent::Stop { to: self.path.clone(), id: self.id });
        }
    }

    /// Kills the worker; true if this call fired the kill.
    pub(crate) fn request_kill(&self) -> bool {
        // Kill first: a worker woken by the stop signal must find itself killed, not
        // return normally because its `recv` saw the stop.
        let first = self.kill.fire();
        self.stopping.fire();
        if first {
            self.route(ToParent::Kill { to: self.path.clone(), id: self.id });
        }
        first
    }

    /// Sends a control frame to the parent, for a worker reached through it.
    fn route(&self, frame: ToParent<()>) {
        if let Mailbox::Routed(link) = &self.mailbox {
            link.push(wire::encode(&frame).expect("a frame without a message encodes"));
        }
    }

    /// Records how the worker ended; closes intake.
    pub(crate) fn set_reason(&self, reason: Reason) {
        self.stopping.fire();
        let _ = self.reason.set(reason);
    }

    /// How the worker ended, once it has.
    pub(crate) fn reason(&self) -> Option<&Reason> {
        self.reason.get()
    }

    /// Waits for the end of the worker; how it ended.
    pub(crate) async fn join(&self) -> Reason {
        self.done.wait().await;
        self.reason.get().cloned().expect("a worker's reason is set before it is done")
    }

    /// Asks the worker to stop; after `grace`, kills it. How it ended.
    pub(crate) async fn stop(&self, grace: Duration) -> Reason {
        self.request_stop();
        if tokio::time::timeout(grace, self.done.wait()).await.is_err() {
            self.request_kill();
        }
        self.join().await
    }

    fn refused(&self, refused: Refused, link: &Link<M>) -> Error {
        match refused {
            Refused::Closed => self.closed(),
            Refused::Full => match &self.mailbox {
                Mailbox::Routed(_) => self.full(link.capacity(), "window of sends waiting in the parent"),
                _ => self.full(link.capacity(), "mailbox"),
            },
        }
    }

    fn full(&self, capacity: usize, what: &str) -> Error {
        let message = format!("its {what} of {capacity} messages is full");
        Error::new(ErrorKind::Full, message).with_path(self.path.as_str())
    }

    fn closed(&self) -> Error {
        let message = match self.reason.get() {
            Some(reason) => format!("the worker has ended ({reason}); it takes no messages"),
            None => "the worker is stopping; it takes no new messages".to_owned(),
        };
        Error::new(ErrorKind::Closed, message).with_path(self.path.as_str())
    }
}
