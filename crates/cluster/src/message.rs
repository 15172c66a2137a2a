//! Messages, the envelopes they travel in, and replies to asks.

use std::fmt;
use std::sync::Arc;

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

impl<M: Message> Envelope<M> {
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
            .field("ask", &self.reply.is_some())
            .finish()
    }
}

/// The way back to a worker (or outside caller) waiting on an ask. Dropping it unanswered
/// fails the ask at once with [`NoReply`](ErrorKind::NoReply).
pub struct Reply<M> {
    to: ReplyTo<M>,
    asker: Option<Path>,
}

enum ReplyTo<M> {
    /// The asker is in this process.
    Local(oneshot::Sender<Result<M>>),
    /// The asker is in another process: the reply is a frame on the link it came over.
    Remote(Remote<M>),
}

/// Where the answer to an ask that came over a link goes back: the link, which frames it
/// in the language of its other end.
pub(crate) trait ReplyPath<M>: Send + Sync {
    /// Sends the reply to ask `ask`; fails if it cannot be encoded or the link is gone.
    fn reply(&self, ask: u64, message: &M) -> Result<()>;
    /// Says that ask `ask` was dropped unanswered.
    fn no_reply(&self, ask: u64);
    /// Says that ask `ask` failed with `error` before it reached its worker.
    fn fail(&self, ask: u64, error: &Error);
}

/// An ask that came over a link from another process, by its id on the link.
struct Remote<M> {
    link: Arc<dyn ReplyPath<M>>,
    ask: u64,
    answered: bool,
}

impl<M> Reply<M> {
    /// A reply handle and the receiver the asker awaits.
    pub(crate) fn channel(asker: Option<Path>) -> (Reply<M>, oneshot::Receiver<Result<M>>) {
        let (tx, rx) = oneshot::channel();
        (Reply { to: ReplyTo::Local(tx), asker }, rx)
    }

    /// Whether nobody waits for the reply any more: an asker in this process gave up (its
    /// timeout passed, or it was dropped).
    pub(crate) fn is_abandoned(&self) -> bool {
        matches!(&self.to, ReplyTo::Local(tx) if tx.is_closed())
    }
}

impl<M: Message> Reply<M> {
    /// A reply handle for ask `ask` that came over `link` from another process.
    pub(crate) fn remote(link: Arc<dyn ReplyPath<M>>, ask: u64, asker: Option<Path>) -> Reply<M> {
        Reply { to: ReplyTo::Remote(Remote { link, ask, answered: false }), asker }
    }

    /// Sends the reply. Fails with [`Closed`](ErrorKind::Closed) if the asker stopped
    /// waiting (its timeout passed, or it was dropped). For an asker in another process
    /// the reply is sent without knowing whether it still waits; it fails with
    /// [`Codec`](ErrorKind::Codec) if it cannot be encoded (the asker then gets
    /// [`NoReply`](ErrorKind::NoReply)).
    pub fn send(self, message: M) -> Result<()> {
        let asker = self.asker;
        let result = match self.to {
            ReplyTo::Local(tx) => tx
                .send(Ok(message))
                .map_err(|_| Error::new(ErrorKind::Closed, "the asker stopped waiting for the reply")),
            ReplyTo::Remote(mut remote) => {
                let sent = remote.link.reply(remote.ask, &message);
                remote.answered = sent.is_ok();
                sent
            }
        };
        result.map_err(|err| match asker {
            Some(path) => err.with_path(path.as_str()),
            None => err,
        })
    }

    /// Fails the ask with `error`: it could not be delivered.
    pub(crate) fn fail(self, error: Error) {
        match self.to {
            ReplyTo::Local(tx) => drop(tx.send(Err(error))),
            ReplyTo::Remote(mut remote) => {
                remote.link.fail(remote.ask, &error);
                remote.answered = true;
            }
        }
    }

    /// Hands the asker a result: a reply, or the error that ended the ask.
    pub(crate) fn answer(self, result: Result<M>) {
        match (self.to, result) {
            (ReplyTo::Local(tx), result) => drop(tx.send(result)),
            (ReplyTo::Remote(remote), Ok(message)) => {
                let asker = self.asker;
                drop(Reply { to: ReplyTo::Remote(remote), asker }.send(message));
            }
            (ReplyTo::Remote(_), Err(_)) => {} // dropped unanswered: the asker fails
        }
    }
}

impl<M> Drop for Remote<M> {
    fn drop(&mut self) {
        if !self.answered {
            self.link.no_reply(self.ask);
        }
    }
}

impl<M> fmt::Debug for Reply<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reply").field("asker", &self.asker).finish()
    }
}
