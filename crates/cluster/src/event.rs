//! Membership events: workers coming up and going down.

use std::fmt;

use tokio::sync::mpsc;

use crate::{Path, Reason, WorkerRef};

/// A change of membership.
#[non_exhaustive]
pub enum Event<M> {
    /// The worker is up: it is registered under its path and takes messages.
    Up(WorkerRef<M>),
    /// The worker has ended, for the reason given; its path is free again and its locks
    /// are released.
    Down(WorkerRef<M>, Reason),
}

impl<M> Event<M> {
    /// The worker the event is about.
    pub fn worker(&self) -> &WorkerRef<M> {
        match self {
            Event::Up(worker) | Event::Down(worker, _) => worker,
        }
    }

    /// The path of the worker the event is about.
    pub fn path(&self) -> &Path {
        &self.worker().cell.path
    }

    /// Whether this is an `Up` event.
    pub fn is_up(&self) -> bool {
        matches!(self, Event::Up(_))
    }
}

impl<M> Clone for Event<M> {
    fn clone(&self) -> Self {
        match self {
            Event::Up(worker) => Event::Up(worker.clone()),
            Event::Down(worker, reason) => Event::Down(worker.clone(), reason.clone()),
        }
    }
}

impl<M> fmt::Debug for Event<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Up(worker) => f.debug_tuple("Up").field(&worker.cell.path).finish(),
            Event::Down(worker, reason) => f.debug_tuple("Down").field(&worker.cell.path).field(reason).finish(),
        }
    }
}

/// A subscription to membership events.
///
/// It first yields `Up` for every current member (a snapshot, in path order), then every
/// change as it happens, so no worker is missed. All subscribers see changes in the same
/// order, and a worker's `Up` always comes before its `Down`. The subscription is
/// unbounded (membership changes are rare next to messages) and ends when the cluster has
/// shut down.
pub struct Events<M> {
    rx: mpsc::UnboundedReceiver<Event<M>>,
}

impl<M> Events<M> {
    pub(crate) fn new(rx: mpsc::UnboundedReceiver<Event<M>>) -> Self {
        Events { rx }
    }

    /// The next event; `None` once the cluster has shut down and every event was taken.
    ///
    /// # Cancel safety
    /// Cancel safe: an event is never lost by dropping the future.
    pub async fn next(&mut self) -> Option<Event<M>> {
        self.rx.recv().await
    }

    /// The next event if one is pending, without waiting.
    pub fn try_next(&mut self) -> Option<Event<M>> {
        self.rx.try_recv().ok()
    }
}

impl<M> fmt::Debug for Events<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Events").field("pending", &self.rx.len()).finish()
    }
}
