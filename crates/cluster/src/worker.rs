//! References to workers, and the record each worker shares with its references.

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::message::Reply;
use crate::signal::Signal;
use crate::{Envelope, Error, ErrorKind, Message, Path, Props, Reason, Result};

/// A reference to a worker: its path and properties, and the way to message it. Cheap to
/// clone; it does not keep the worker alive.
///
/// A reference obtained through a worker's [`Context`](crate::Context) (its cluster handle,
/// its events, its groups) sends as that worker: receivers see its path as the
/// [`sender`](Envelope::sender). Any other reference sends as nobody (`None`).
///
/// Mailboxes are bounded: [`send`](WorkerRef::send) waits while the mailbox is full,
/// [`try_send`](WorkerRef::try_send) fails with [`Full`](ErrorKind::Full). Messages from one
/// sender to one worker arrive in the order they were sent.
pub struct WorkerRef<M> {
    pub(crate) cell: Arc<Cell<M>>,
    pub(crate) from: Option<Path>,
}

/// What a worker shares with its references and the cluster.
pub(crate) struct Cell<M> {
    pub(crate) path: Path,
    pub(crate) props: Props,
    mailbox: Mailbox<M>,
    /// Set when the worker is asked to stop, and when it ends: intake is closed.
    pub(crate) stopping: Signal,
    /// Set to end the worker at once.
    pub(crate) kill: Signal,
    /// Set once the worker has ended, its locks are free, and its `Down` is published.
    pub(crate) done: Signal,
    reason: OnceLock<Reason>,
}

/// How messages reach a worker: one variant per kind of worker. A child process will be
/// another variant (messages encoded with serde and written to the child's socket).
enum Mailbox<M> {
    /// A task of this process: its bounded channel; messages are moved, not encoded.
    Task(mpsc::Sender<Envelope<M>>),
}

impl<M: Message> Cell<M> {
    /// The record of a task worker, and the receiving end of its mailbox.
    pub(crate) fn task(path: Path, props: Props, capacity: usize) -> (Cell<M>, mpsc::Receiver<Envelope<M>>) {
        let (tx, rx) = mpsc::channel(capacity);
        let cell = Cell {
            path,
            props,
            mailbox: Mailbox::Task(tx),
            stopping: Signal::default(),
            kill: Signal::default(),
            done: Signal::default(),
            reason: OnceLock::new(),
        };
        (cell, rx)
    }

    /// Puts `envelope` in the mailbox, waiting for room; gives it back if intake is closed.
    pub(crate) async fn deliver(&self, envelope: Envelope<M>) -> Result<(), (Error, Envelope<M>)> {
        if self.stopping.is_fired() {
            return Err((self.closed(), envelope));
        }
        match &self.mailbox {
            Mailbox::Task(tx) => tx.send(envelope).await.map_err(|e| (self.closed(), e.0)),
        }
    }

    /// Puts `envelope` in the mailbox if there is room; gives it back otherwise.
    pub(crate) fn try_deliver(&self, envelope: Envelope<M>) -> Result<(), (Error, Envelope<M>)> {
        if self.stopping.is_fired() {
            return Err((self.closed(), envelope));
        }
        match &self.mailbox {
            Mailbox::Task(tx) => tx.try_send(envelope).map_err(|e| match e {
                mpsc::error::TrySendError::Full(envelope) => {
                    let message = format!("its mailbox of {} messages is full", tx.max_capacity());
                    (Error::new(ErrorKind::Full, message).with_path(self.path.as_str()), envelope)
                }
                mpsc::error::TrySendError::Closed(envelope) => (self.closed(), envelope),
            }),
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
        self.stopping.fire();
        if tokio::time::timeout(grace, self.done.wait()).await.is_err() {
            self.kill.fire();
        }
        self.join().await
    }

    fn closed(&self) -> Error {
        let message = match self.reason.get() {
            Some(reason) => format!("the worker has ended ({reason}); it takes no messages"),
            None => "the worker is stopping; it takes no new messages".to_owned(),
        };
        Error::new(ErrorKind::Closed, message).with_path(self.path.as_str())
    }
}

impl<M: Message> WorkerRef<M> {
    /// The worker's path.
    pub fn path(&self) -> &Path {
        &self.cell.path
    }

    /// The properties the worker was spawned with.
    pub fn props(&self) -> &Props {
        &self.cell.props
    }

    /// Sends `message`, waiting while the mailbox is full. Fails with
    /// [`Closed`](ErrorKind::Closed) if the worker is stopping or gone.
    ///
    /// # Cancel safety
    /// Dropping the future before it completes leaves the message unsent.
    pub async fn send(&self, message: M) -> Result<()> {
        let envelope = Envelope::new(message, self.from.clone(), None);
        self.cell.deliver(envelope).await.map_err(|(e, _)| e)
    }

    /// Sends `message` if the mailbox has room; [`Full`](ErrorKind::Full) otherwise, or
    /// [`Closed`](ErrorKind::Closed) if the worker is stopping or gone.
    pub fn try_send(&self, message: M) -> Result<()> {
        let envelope = Envelope::new(message, self.from.clone(), None);
        self.cell.try_deliver(envelope).map_err(|(e, _)| e)
    }

    /// Sends `message` and waits for the reply, at most `timeout` in all (waiting for room
    /// in the mailbox included).
    ///
    /// Fails with [`Timeout`](ErrorKind::Timeout) when no reply came in time, and at once
    /// with [`Closed`](ErrorKind::Closed) if the worker is stopping or gone, or
    /// [`NoReply`](ErrorKind::NoReply) if it drops the message unanswered (or ends first).
    ///
    /// # Examples
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> latchkey_cluster::Result<()> {
    /// use std::time::Duration;
    /// use latchkey_cluster::{Cluster, Props};
    ///
    /// let cluster = Cluster::<u64>::builder().scope(latchkey::Scope::isolated()).build()?;
    /// let doubler = cluster
    ///     .spawn_fn("/doubler", Props::new(), |mut ctx| async move {
    ///         while let Some(envelope) = ctx.recv().await {
    ///             let n = *envelope.message();
    ///             envelope.reply(2 * n)?;
    ///         }
    ///         Ok::<(), latchkey_cluster::Error>(())
    ///     })
    ///     .await?;
    /// assert_eq!(doubler.ask(21, Duration::from_secs(5)).await?, 42);
    /// cluster.shutdown(Duration::from_secs(5)).await;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn ask(&self, message: M, timeout: Duration) -> Result<M> {
        let (reply, answer) = Reply::channel(self.from.clone());
        let envelope = Envelope::new(message, self.from.clone(), Some(reply));
        let exchange = async {
            self.cell.deliver(envelope).await.map_err(|(e, _)| e)?;
            answer.await.map_err(|_| {
                Error::new(ErrorKind::NoReply, "the worker dropped the ask without replying")
                    .with_path(self.path().as_str())
            })
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(result) => result,
            Err(_) => {
                Err(Error::new(ErrorKind::Timeout, format!("no reply within {timeout:?}"))
                    .with_path(self.path().as_str()))
            }
        }
    }

    /// Asks the worker to stop, and waits at most `grace` for it to end before killing it.
    /// Returns how it ended: [`Reason::Killed`] if it had to be killed.
    ///
    /// Stopping closes intake (sends fail with [`Closed`](ErrorKind::Closed)); the worker's
    /// [`recv`](crate::Context::recv) returns the messages already in the mailbox, then `None`.
    pub async fn stop(&self, grace: Duration) -> Reason {
        self.cell.stop(grace).await
    }

    /// Ends the worker at once: a task's future is dropped at its next await (with the
    /// locks it holds). A task that blocks its thread cannot be interrupted.
    pub fn kill(&self) {
        // Kill first: a worker woken by the stop signal must find itself killed, not
        // return normally because its `recv` saw the stop.
        self.cell.kill.fire();
        self.cell.stopping.fire();
    }

    /// Waits for the worker to end; how it ended. When this returns, the worker's locks
    /// are free and its `Down` event has been published.
    pub async fn join(&self) -> Reason {
        self.cell.join().await
    }

    /// How the worker ended, or `None` while it runs.
    pub fn ended(&self) -> Option<Reason> {
        self.cell.done.is_fired().then(|| self.cell.reason().cloned()).flatten()
    }
}

impl<M> Clone for WorkerRef<M> {
    fn clone(&self) -> Self {
        WorkerRef { cell: self.cell.clone(), from: self.from.clone() }
    }
}

impl<M> fmt::Debug for WorkerRef<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("WorkerRef").field(&self.cell.path).finish()
    }
}
