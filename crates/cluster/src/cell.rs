//! The record each worker shares with its references and the cluster, and how messages
//! reach it: a channel for a task of this process, else a link to the process that has it
//! (a child, the parent, another node), whose frames the role that owns the link makes
//! (a [`Route`]). Whatever is on the other side, a reference goes through this.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::link::{Link, Refused};
use crate::signal::Signal;
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
    /// Its path's claim in the store of a cluster of nodes, for as long as it lives.
    claim: parking_lot::Mutex<Option<latchkey::Guard<'static>>>,
    /// Set when the worker is asked to stop, and when it ends: intake is closed.
    pub(crate) stopping: Signal,
    /// Set to end the worker at once.
    pub(crate) kill: Signal,
    /// Set once the worker has ended, its locks are free, and its `Down` is published.
    pub(crate) done: Signal,
    reason: OnceLock<Reason>,
}

/// How messages reach a worker.
enum Mailbox<M> {
    /// A task of this process: its bounded channel; messages are moved, not encoded.
    Task(mpsc::Sender<Envelope<M>>),
    /// A worker of another process, reached over `link` with the frames `route` makes;
    /// at most a window's worth of messages wait on the other side.
    Link(Arc<Link<M>>, Route<M>),
}

/// A stop or a kill, sent over a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Control {
    Stop,
    Kill,
}

/// The frame that carries an envelope (an ask if the id is given) to a worker.
pub(crate) type DeliverFrame<M> = fn(&Cell<M>, Option<u64>, &Envelope<M>) -> Result<Vec<u8>>;

/// The frame that stops or kills a worker.
pub(crate) type ControlFrame<M> = fn(&Cell<M>, Control) -> Vec<u8>;

/// How the role that owns a link reaches the workers behind it.
pub(crate) struct Route<M> {
    pub(crate) deliver: DeliverFrame<M>,
    /// If stops and kills travel as frames (a parent signals its child itself).
    pub(crate) control: Option<ControlFrame<M>>,
    /// What the window of the link is, for a `Full` error.
    pub(crate) window: &'static str,
    /// Whether the worker is this process's own (its child), rather than another's.
    pub(crate) ours: bool,
}

/// A new worker id.
pub(crate) fn next_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

impl<M> Cell<M> {
    /// Whether the worker is this process's: a task, or a child process of it.
    pub(crate) fn is_ours(&self) -> bool {
        match &self.mailbox {
            Mailbox::Task(_) => true,
            Mailbox::Link(_, route) => route.ours,
        }
    }

    /// Whether the worker is reached over `link`.
    pub(crate) fn is_behind(&self, link: &Arc<Link<M>>) -> bool {
        matches!(&self.mailbox, Mailbox::Link(theirs, _) if Arc::ptr_eq(theirs, link))
    }
}

impl<M: Message> Cell<M> {
    fn new(id: u64, path: Path, props: Props, pid: Option<u32>, mailbox: Mailbox<M>) -> Cell<M> {
        let (stopping, kill, done, claim) = Default::default();
        Cell { id, path, props, pid, mailbox, claim, stopping, kill, done, reason: OnceLock::new() }
    }

    /// The record of a task worker, and the receiving end of its mailbox.
    pub(crate) fn task(id: u64, path: Path, props: Props, capacity: usize) -> (Cell<M>, mpsc::Receiver<Envelope<M>>) {
        let (tx, rx) = mpsc::channel(capacity);
        (Cell::new(id, path, props, None, Mailbox::Task(tx)), rx)
    }

    /// The record of a worker of another process, reached over `link` by `route`.
    pub(crate) fn linked(
        id: u64,
        path: Path,
        props: Props,
        pid: Option<u32>,
        link: Arc<Link<M>>,
        route: Route<M>,
    ) -> Cell<M> {
        Cell::new(id, path, props, pid, Mailbox::Link(link, route))
    }

    /// Keeps the claim of the worker's path until it ends.
    pub(crate) fn keep_claim(&self, claim: latchkey::Guard<'static>) {
        *self.claim.lock() = Some(claim);
    }

    /// Gives the claim of the worker's path back, and waits until the store has it (at
    /// most a few seconds: a store that does not answer gets it in the background).
    pub(crate) async fn release_claim(&self) {
        const PATIENCE: Duration = Duration::from_secs(5);
        let claim = self.claim.lock().take();
        if let Some(claim) = claim {
            let _ = tokio::time::timeout(PATIENCE, claim.release_async()).await;
        }
    }

    /// Puts `envelope` in the mailbox, waiting for room; gives it back if intake is closed.
    pub(crate) async fn deliver(&self, envelope: Envelope<M>) -> Result<(), (Error, Envelope<M>)> {
        if self.stopping.is_fired() {
            return Err((self.closed(), envelope));
        }
        match &self.mailbox {
            Mailbox::Task(tx) => tx.send(envelope).await.map_err(|e| (self.closed(), e.0)),
            Mailbox::Link(link, route) => {
                let (ask, bytes) = match link.prepare(&envelope, |ask| (route.deliver)(self, ask, &envelope)) {
                    Ok(prepared) => prepared,
                    Err(err) => return Err((err.with_path(self.path.as_str()), envelope)),
                };
                if let Err(refused) = link.acquire(&(self.id, self.path.clone())).await {
                    return Err((self.refused(refused, link, route), envelope));
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
            Mailbox::Link(link, route) => {
                let (ask, bytes) = match link.prepare(&envelope, |ask| (route.deliver)(self, ask, &envelope)) {
                    Ok(prepared) => prepared,
                    Err(err) => return Err((err.with_path(self.path.as_str()), envelope)),
                };
                if let Err(refused) = link.try_acquire(&(self.id, self.path.clone())) {
                    return Err((self.refused(refused, link, route), envelope));
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

    /// Asks the worker to stop: closes intake.
    pub(crate) fn request_stop(&self) {
        if self.stopping.fire() {
            self.route(Control::Stop);
        }
    }

    /// Kills the worker; true if this call fired the kill.
    pub(crate) fn request_kill(&self) -> bool {
        // Kill first: a worker woken by the stop signal must find itself killed, not
        // return normally because its `recv` saw the stop.
        let first = self.kill.fire();
        self.stopping.fire();
        if first {
            self.route(Control::Kill);
        }
        first
    }

    /// Sends a stop or kill over the link, where they travel as frames.
    fn route(&self, control: Control) {
        if let Mailbox::Link(link, Route { control: Some(frame), .. }) = &self.mailbox {
            link.push(frame(self, control));
        }
    }

    /// Records how the worker ended; closes intake, drops the claim of its path (given
    /// back in the background, if [`release_claim`](Cell::release_claim) did not first).
    pub(crate) fn set_reason(&self, reason: Reason) {
        self.stopping.fire();
        let _ = self.reason.set(reason);
        drop(self.claim.lock().take());
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

    fn refused(&self, refused: Refused, link: &Link<M>, route: &Route<M>) -> Error {
        match refused {
            Refused::Closed => self.closed(),
            Refused::Full => self.full(link.capacity(), route.window),
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
