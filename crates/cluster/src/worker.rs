//! References to workers.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::cell::Cell;
use crate::message::Reply;
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
///
/// A task worker and a process worker look the same. Messages to a process worker are
/// encoded with serde (a message that cannot be encoded fails with
/// [`Codec`](ErrorKind::Codec)); its mailbox counts the messages its worker has not yet
/// received. Inside a process worker, a reference to any other worker sends through the
/// parent: `send` returns once the parent has room for the message (at most a mailbox's
/// worth of a child's sends wait there to be placed), and the message is placed in the
/// receiver's mailbox before the sender's `Down`. A message to a worker that ends before
/// it is placed is dropped; an ask to it fails with [`Closed`](ErrorKind::Closed).
pub struct WorkerRef<M> {
    pub(crate) cell: Arc<Cell<M>>,
    pub(crate) from: Option<Path>,
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

    /// The process id of a process worker (see [`Cluster::spawn_process`](crate::Cluster::spawn_process));
    /// `None` for a task worker.
    pub fn pid(&self) -> Option<u32> {
        self.cell.pid
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
    ///
    /// Inside a process worker, a reference to any other worker sends through the parent,
    /// and `Full` reflects this worker's own window of sends waiting in the parent (a
    /// mailbox's worth, shared by all its receivers), not the receiver's mailbox: a
    /// `try_send` to a receiver whose mailbox is full succeeds while the window has room,
    /// and the message waits in the parent; one to a receiver with room fails while the
    /// window is full of messages to others.
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
            answer.await.unwrap_or_else(|_| {
                Err(Error::new(ErrorKind::NoReply, "the worker dropped the ask without replying")
                    .with_path(self.path().as_str()))
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
    /// locks it holds), a child process gets SIGKILL. A task that blocks its thread
    /// cannot be interrupted.
    pub fn kill(&self) {
        self.cell.request_kill();
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
