//! Groups: the workers under a path prefix, kept current by membership events.

use std::fmt;
use std::sync::Arc;

use crate::{Envelope, Error, ErrorKind, Event, Events, Message, Path, Result, WorkerRef};

/// The live workers strictly below a path prefix, for round-robin and broadcast sends.
/// Made by [`Cluster::group`](crate::Cluster::group).
///
/// The group follows membership events: before each operation it applies the events that
/// have arrived, so a worker spawned before the call is a member and one whose `Down` was
/// published is not. Members are kept in path order.
///
/// # Examples
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> latchkey_cluster::Result<()> {
/// use std::time::Duration;
/// use latchkey_cluster::{Cluster, Context, Props};
///
/// async fn echo(mut ctx: Context<String>) -> Result<(), latchkey_cluster::Error> {
///     while let Some(envelope) = ctx.recv().await {
///         let reply = format!("{} from {}", envelope.message(), ctx.path());
///         if envelope.is_ask() {
///             envelope.reply(reply)?;
///         }
///     }
///     Ok(())
/// }
///
/// let cluster = Cluster::builder().scope(latchkey::Scope::isolated()).entry("echo", echo).build()?;
/// for _ in 0..3 {
///     cluster.spawn("/pool/", Props::new(), "echo").await?;
/// }
/// let mut pool = cluster.group("/pool");
/// assert_eq!(pool.members().len(), 3);
/// assert_eq!(pool.broadcast("hello".to_owned()).await?, 3);
/// assert_eq!(pool.send_round_robin("one".to_owned()).await?, "/pool/1");
/// assert_eq!(pool.send_round_robin("two".to_owned()).await?, "/pool/2");
/// cluster.shutdown(Duration::from_secs(5)).await;
/// # Ok(())
/// # }
/// ```
pub struct Group<M> {
    prefix: String,
    members: Vec<WorkerRef<M>>,
    events: Events<M>,
    /// Where the next round-robin send starts.
    next: usize,
}

impl<M: Message> Group<M> {
    pub(crate) fn new(prefix: &str, events: Events<M>) -> Self {
        Group { prefix: prefix.to_owned(), members: Vec::new(), events, next: 0 }
    }

    /// The prefix the group covers.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The members now, in path order.
    pub fn members(&mut self) -> &[WorkerRef<M>] {
        self.refresh();
        &self.members
    }

    /// Applies and returns the next change of the group's membership that it has not
    /// applied yet (other calls apply pending changes silently); waits for one if none is
    /// pending. `None` once the cluster has shut down.
    ///
    /// # Cancel safety
    /// Cancel safe: no change is lost by dropping the future.
    pub async fn changed(&mut self) -> Option<Event<M>> {
        loop {
            let event = self.events.next().await?;
            if self.apply(&event) {
                return Some(event);
            }
        }
    }

    /// Sends `message` to the next member in turn, waiting while its mailbox is full; the
    /// member's path. A member that is stopping is skipped; with no member to take it, the
    /// send fails with [`NoMembers`](ErrorKind::NoMembers).
    pub async fn send_round_robin(&mut self, message: M) -> Result<Path> {
        self.refresh();
        let mut message = message;
        for _ in 0..self.members.len() {
            let worker = &self.members[self.next % self.members.len()];
            self.next = self.next.wrapping_add(1);
            match worker.cell.deliver(Envelope::new(message, worker.from.clone(), None)).await {
                Ok(()) => return Ok(worker.path().clone()),
                Err((_, envelope)) => message = envelope.into_message(),
            }
        }
        Err(self.no_members())
    }

    /// Sends a copy of `message` to every member, one after the other, each waiting while
    /// that member's mailbox is full; how many took it. Members that are stopping are
    /// skipped; if none took it, the send fails with [`NoMembers`](ErrorKind::NoMembers).
    pub async fn broadcast(&mut self, message: M) -> Result<usize>
    where
        M: Clone,
    {
        self.refresh();
        let mut delivered = 0;
        for worker in &self.members {
            let envelope = Envelope::new(message.clone(), worker.from.clone(), None);
            delivered += usize::from(worker.cell.deliver(envelope).await.is_ok());
        }
        match delivered {
            0 => Err(self.no_members()),
            n => Ok(n),
        }
    }

    /// Applies the events that have arrived.
    fn refresh(&mut self) {
        while let Some(event) = self.events.try_next() {
            self.apply(&event);
        }
    }

    /// Applies one event; whether it concerned the group.
    fn apply(&mut self, event: &Event<M>) -> bool {
        if !event.path().is_under(&self.prefix) {
            return false;
        }
        let path = event.path();
        match event {
            Event::Up(worker) => {
                let at = self.members.partition_point(|m| m.path() < path);
                self.members.insert(at, worker.clone());
            }
            Event::Down(worker, _) => self.members.retain(|m| !Arc::ptr_eq(&m.cell, &worker.cell)),
        }
        true
    }

    fn no_members(&self) -> Error {
        Error::new(ErrorKind::NoMembers, format!("no live worker under {} takes messages", self.prefix))
            .with_path(self.prefix.as_str())
    }
}

impl<M> fmt::Debug for Group<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let members: Vec<&Path> = self.members.iter().map(|m| &m.cell.path).collect();
        f.debug_struct("Group").field("prefix", &self.prefix).field("members", &members).finish()
    }
}
