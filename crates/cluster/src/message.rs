//! Messages, the envelopes they travel in, and replies to asks.

use std::fmt;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::oneshot;

use crate::{Error, ErrorKind, Path, Result};

/// What workers of a cluster send each other: any `Serialize + DeserializeOwned + Send`
/// type (implemented for all of them).
///
/// Messages between task workers are moved, never serialized; serde is for messages that
/// cross a process boundary.
pub trait Message: Serialize + DeserializeOwned + Send + 'static {}

impl<T: Serialize + DeserializeOwned + Send + 'static> Message for T {}

/// A received message, with its sender and, for an [`ask`](crate::WorkerRef::ask), the way
/// to reply.
pub struct Envelope<M> {
    message: M,
    sender: Option<Path>,
    reply: Option<Reply<M>>,
}

impl<M> Envelope<M> {
    pub(crate) fn new(message: M, sender: Option<Path>, reply: Option<Reply<M>>) -> Self {
        Envelope { message, sender, reply }
    }

    /// The message.
    pub fn message(&self) -> &M {
        &self.message
    }

    /// The message, by value (an ask's reply is dropped: the asker gets a
    /// [`NoReply`](ErrorKind::NoReply) error).
    pub fn into_message(self) -> M {
        self.message
    }

    /// The path of the worker that sent it; `None` when it came from outside any worker.
    pub fn sender(&self) -> Option<&Path> {
        self.sender.as_ref()
    }

    /// Whether the sender asked and waits for a reply.
    pub fn is_ask(&self) -> bool {
        self.reply.is_some()
    }

    /// Takes the reply handle out, to reply after the envelope is gone.
    pub fn take_reply(&mut self) -> Option<Reply<M>> {
        self.reply.take()
    }

    /// Replies to an ask. Fails with [`NotAsked`](ErrorKind::NotAsked) if the message was
    /// sent rather than asked, or [`Closed`](ErrorKind::Closed) if the asker stopped waiting.
    pub fn reply(self, message: M) -> Result<()> {
        match self.reply {
            Some(reply) => reply.send(message),
            None => Err(Error::new(ErrorKind::NotAsked, "the message was sent, not asked: nobody waits for a reply")),
        }
    }
}

impl<M: fmt::Debug> fmt::Debug for Envelope<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Envelope")
            .field("message", &self.message)
            .field("sender", &self.sender)
            .field("ask", &self.is_ask())
            .finish()
    }
}

/// The way back to a worker (or outside caller) waiting on an ask. Dropping it unanswered
/// fails the ask at once with [`NoReply`](ErrorKind::NoReply).
pub struct Reply<M> {
    tx: oneshot::Sender<M>,
    asker: Option<Path>,
}

impl<M> Reply<M> {
    /// A reply handle and the receiver the asker awaits.
    pub(crate) fn channel(asker: Option<Path>) -> (Reply<M>, oneshot::Receiver<M>) {
        let (tx, rx) = oneshot::channel();
        (Reply { tx, asker }, rx)
    }

    /// Sends the reply. Fails with [`Closed`](ErrorKind::Closed) if the asker stopped
    /// waiting (its timeout passed, or it was dropped).
    pub fn send(self, message: M) -> Result<()> {
        let asker = self.asker;
        self.tx.send(message).map_err(|_| {
            let err = Error::new(ErrorKind::Closed, "the asker stopped waiting for the reply");
            match asker {
                Some(path) => err.with_path(path.as_str()),
                None => err,
            }
        })
    }
}

impl<M> fmt::Debug for Reply<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reply").field("asker", &self.asker).finish()
    }
}
