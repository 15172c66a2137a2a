//! What a worker sees of itself and of its cluster.

use std::fmt;
use std::future::{poll_fn, Future};
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;

use latchkey::Scope;
use tokio::sync::mpsc;

use crate::cell::Cell;
use crate::link::Link;
use crate::{Cluster, Envelope, Events, Message, Path, Props};

/// A worker's view of itself and its cluster, handed to its entry function.
///
/// Everything reached through the context (its [`cluster`](Context::cluster) handle, its
/// [`events`](Context::events), references from lookups and groups) sends as this worker.
pub struct Context<M> {
    cell: Arc<Cell<M>>,
    inbox: mpsc::Receiver<Envelope<M>>,
    cluster: Cluster<M>,
    /// Whether the inbox was closed after a stop request.
    closed: bool,
    /// In a process worker: the link to the parent, owed a credit per message received.
    credits: Option<Arc<Link<M>>>,
}

impl<M: Message> Context<M> {
    pub(crate) fn new(cell: Arc<Cell<M>>, inbox: mpsc::Receiver<Envelope<M>>, cluster: Cluster<M>) -> Self {
        Context { cell, inbox, cluster, closed: false, credits: None }
    }

    /// The context of a process worker, whose mailbox is filled from `link`.
    pub(crate) fn with_credits(mut self, link: Arc<Link<M>>) -> Self {
        self.credits = Some(link);
        self
    }

    /// The worker's path.
    pub fn path(&self) -> &Path {
        &self.cell.path
    }

    /// The properties the worker was spawned with.
    pub fn props(&self) -> &Props {
        &self.cell.props
    }

    /// The next message. `None` once the worker has been asked to stop and every message
    /// that was in its mailbox then has been received: a worker that loops on `recv`
    /// drains its mailbox and can then return.
    ///
    /// # Cancel safety
    /// Cancel safe: a message is never lost by dropping the future.
    pub async fn recv(&mut self) -> Option<Envelope<M>> {
        let envelope = self.next_envelope().await;
        if let (Some(_), Some(link)) = (&envelope, &self.credits) {
            link.owe(&(self.cell.id, self.cell.path.clone())); // room for one more in the mailbox
        }
        envelope
    }

    async fn next_envelope(&mut self) -> Option<Envelope<M>> {
        let Context { cell, inbox, closed, .. } = self;
        if !*closed {
            let mut stop = pin!(cell.stopping.wait());
            let mut stopped = false;
            let received = poll_fn(|cx| {
                if let Poll::Ready(envelope) = inbox.poll_recv(cx) {
                    return Poll::Ready(Some(envelope));
                }
                stopped = stopped || stop.as_mut().poll(cx).is_ready();
                match stopped && !killed(cell) {
                    true => Poll::Ready(None),
                    false => Poll::Pending,
                }
            })
            .await;
            match received {
                Some(envelope) => return envelope,
                None => {
                    // Senders that got past the stop check may still deliver until the
                    // inbox is closed; the drain below receives them too.
                    inbox.close();
                    *closed = true;
                }
            }
        }
        inbox.recv().await
    }

    /// Whether the worker has been asked to stop.
    pub fn is_stopping(&self) -> bool {
        self.cell.stopping.is_fired()
    }

    /// Waits until the worker is asked to stop: for a worker busy with something other
    /// than [`recv`](Context::recv), to race against its work.
    pub async fn stop_requested(&self) {
        self.cell.stopping.wait().await;
        if killed(&self.cell) {
            std::future::pending().await
        }
    }

    /// A subscription to membership events: `Up` for every current member, then changes.
    pub fn events(&self) -> Events<M> {
        self.cluster.events()
    }

    /// The lock scope of the cluster. Locks the worker takes are released when it ends,
    /// however it ends (the guards are dropped with its future).
    pub fn scope(&self) -> &Scope {
        self.cluster.scope()
    }

    /// The cluster, seen from this worker: spawn, look up, subscribe, make groups.
    pub fn cluster(&self) -> &Cluster<M> {
        &self.cluster
    }
}

/// Whether the worker is being killed. A kill also fires the stop signal, but the worker
/// must not take that for a graceful stop and return normally: the kill is fired first,
/// and whoever sees both waits to be dropped (the task that runs the worker was woken by
/// the kill and drops it at its next poll).
fn killed<M>(cell: &Cell<M>) -> bool {
    cell.kill.is_fired()
}

impl<M> fmt::Debug for Context<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context").field("path", &self.cell.path).field("props", &self.cell.props).finish()
    }
}
