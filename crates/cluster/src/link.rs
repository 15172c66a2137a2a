//! A link: one end of the socket between a parent and one of its process workers, as
//! both ends use it.
//!
//! Frames are encoded by whoever sends and queued for a writer task, which writes what
//! has queued up in one go. Messages are flow controlled by credits: a link starts with
//! a window of `capacity` credits, each message takes one, and the other end returns
//! them in `Credit` frames (the child when its worker has received a message, the parent
//! when it has placed a forwarded one in its receiver's mailbox). Everything else
//! (replies, events, credits, stops) is not counted, so a reader never waits and no
//! frame waits behind a message that cannot be placed.

use std::collections::HashMap;
use std::io::{self, ErrorKind as IoKind};
use std::os::unix::net::UnixStream as StdStream;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot, Semaphore, TryAcquireError};

use crate::wire::{self, Frames, Outbox, ToChild, ToParent};
use crate::{Envelope, Message, Reply, Result};

/// Which end of the link this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum End {
    /// The parent's end of a link to a child.
    Parent,
    /// A child's end of its link to the parent.
    Child,
}

/// What the writer task is given.
enum Out {
    /// An encoded frame.
    Frame(Vec<u8>),
    /// Credits are owed: send them.
    Nudge,
    /// Answer once everything queued before has been written.
    Flush(oneshot::Sender<()>),
}

/// Why a message was not queued on a link.
pub(crate) enum Refused {
    /// The link is closed: the other end is gone.
    Closed,
    /// No credit is left in the window.
    Full,
}

pub(crate) struct Link<M> {
    out: mpsc::UnboundedSender<Out>,
    /// Credits for messages the other end can still take.
    window: Semaphore,
    capacity: usize,
    /// Asks sent over the link that await their answer, by ask id; `None` once closed.
    asks: Mutex<Option<HashMap<u64, Reply<M>>>>,
    next_ask: AtomicU64,
    /// Credits owed to the other end, sent by the writer in one frame.
    owed: Arc<AtomicU32>,
    /// Set once the other end is gone.
    closed: AtomicBool,
}

impl<M> Link<M> {
    /// Queues an encoded frame that is not flow controlled; false if the link is closed
    /// or gone.
    pub(crate) fn push(&self, bytes: Vec<u8>) -> bool {
        !self.closed.load(Ordering::Acquire) && self.out.send(Out::Frame(bytes)).is_ok()
    }
}

impl<M: Send> Outbox for Link<M> {
    fn push(&self, bytes: Vec<u8>) -> bool {
        Link::push(self, bytes)
    }
}

impl<M: Message> Link<M> {
    /// A link over `stream` with a window of `capacity` messages, and the read half.
    /// Must be called within the runtime, where the writer task runs.
    pub(crate) fn new(end: End, stream: StdStream, capacity: usize) -> io::Result<(Arc<Link<M>>, OwnedReadHalf)> {
        stream.set_nonblocking(true)?;
        let (read, write) = UnixStream::from_std(stream)?.into_split();
        let (out, rx) = mpsc::unbounded_channel();
        let owed = Arc::new(AtomicU32::new(0));
        tokio::spawn(write_frames(end, rx, write, owed.clone()));
        let link = Link {
            out,
            window: Semaphore::new(capacity),
            capacity,
            asks: Mutex::new(Some(HashMap::new())),
            next_ask: AtomicU64::new(1),
            owed,
            closed: AtomicBool::new(false),
        };
        Ok((Arc::new(link), read))
    }

    /// The size of the window.
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Encodes and queues a frame that is not flow controlled.
    pub(crate) fn send<T: Serialize>(&self, frame: &T) -> Result<()> {
        wire::send(self, frame)
    }

    /// Encodes a message frame (given the ask id, if the envelope is an ask): the first
    /// step of a delivery, which can fail without touching the window.
    pub(crate) fn prepare(
        &self,
        envelope: &Envelope<M>,
        frame: impl FnOnce(Option<u64>) -> Result<Vec<u8>>,
    ) -> Result<(Option<u64>, Vec<u8>)> {
        let ask = envelope.is_ask().then(|| self.next_ask.fetch_add(1, Ordering::Relaxed));
        Ok((ask, frame(ask)?))
    }

    /// Takes a credit, waiting for one.
    pub(crate) async fn acquire(&self) -> Result<(), Refused> {
        self.window.acquire().await.map(|permit| permit.forget()).map_err(|_| Refused::Closed)
    }

    /// Takes a credit if one is left.
    pub(crate) fn try_acquire(&self) -> Result<(), Refused> {
        match self.window.try_acquire() {
            Ok(permit) => {
                permit.forget();
                Ok(())
            }
            Err(TryAcquireError::NoPermits) => Err(Refused::Full),
            Err(TryAcquireError::Closed) => Err(Refused::Closed),
        }
    }

    /// Queues a prepared message frame, once its credit is taken, and keeps the ask's reply
    /// handle until its answer comes.
    pub(crate) fn commit(&self, ask: Option<u64>, bytes: Vec<u8>, mut envelope: Envelope<M>) {
        if let (Some(ask), Some(reply)) = (ask, envelope.take_reply()) {
            // Once closed, the reply is dropped here: the asker fails at once.
            if let Some(asks) = self.asks.lock().as_mut() {
                // An ask whose asker gave up stays until the other end answers, which may
                // be never: drop those now and then (each time the table reaches the next
                // power of two past the window, so the cost is amortized).
                if asks.len() >= self.capacity && asks.len().is_power_of_two() {
                    asks.retain(|_, reply| !reply.is_abandoned());
                }
                asks.insert(ask, reply);
            }
        }
        self.push(bytes);
    }

    /// Hands the answer to ask `ask` to its asker (an `Err` or a dropped ask fails it).
    pub(crate) fn answer(&self, ask: u64, result: Option<Result<M>>) {
        let reply = self.asks.lock().as_mut().and_then(|asks| asks.remove(&ask));
        if let (Some(reply), Some(result)) = (reply, result) {
            reply.answer(result);
        }
    }

    /// The other end returned `n` credits.
    pub(crate) fn credit(&self, n: u32) {
        self.window.add_permits((n as usize).min(self.capacity));
    }

    /// Owes the other end one credit; the writer sends what is owed.
    pub(crate) fn owe(&self) {
        if self.owed.fetch_add(1, Ordering::AcqRel) == 0 {
            let _ = self.out.send(Out::Nudge);
        }
    }

    /// Waits until every frame queued so far has been written (or the link failed).
    pub(crate) async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.out.send(Out::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// Closes the link: waiting and later deliveries fail, and every pending ask fails.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.window.close();
        drop(self.asks.lock().take());
    }
}

/// Writes what is queued, in batches, until the link is dropped or the socket fails.
async fn write_frames(end: End, mut rx: mpsc::UnboundedReceiver<Out>, mut write: OwnedWriteHalf, owed: Arc<AtomicU32>) {
    const BATCH: usize = 64 * 1024;
    let mut batch = Vec::with_capacity(BATCH);
    let mut flushes = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(item) = next {
            match item {
                Out::Frame(bytes) => batch.extend_from_slice(&bytes),
                Out::Nudge => {}
                Out::Flush(tx) => flushes.push(tx),
            }
            next = if batch.len() < BATCH { rx.try_recv().ok() } else { None };
        }
        let credits = owed.swap(0, Ordering::AcqRel);
        if credits > 0 {
            let frame = match end {
                End::Parent => wire::encode(&ToChild::<()>::Credit(credits)),
                End::Child => wire::encode(&ToParent::<()>::Credit(credits)),
            };
            batch.extend_from_slice(&frame.expect("a credit frame encodes"));
        }
        if write.write_all(&batch).await.is_err() {
            return;
        }
        batch.clear();
        for tx in flushes.drain(..) {
            let _ = tx.send(());
        }
    }
}

/// Reads frames from the other end.
pub(crate) struct Reader {
    read: OwnedReadHalf,
    frames: Frames,
}

impl Reader {
    pub(crate) fn new(read: OwnedReadHalf) -> Self {
        Reader { read, frames: Frames::default() }
    }

    /// Waits for more bytes; false at the end of the stream. Cancel safe.
    pub(crate) async fn fill(&mut self) -> io::Result<bool> {
        Ok(self.read.read_buf(self.frames.spare()).await? > 0)
    }

    /// Takes the bytes that have arrived, without waiting; false at the end of the
    /// stream or when none are left.
    pub(crate) fn fill_now(&mut self) -> io::Result<bool> {
        match self.read.try_read_buf(self.frames.spare()) {
            Ok(n) => Ok(n > 0),
            Err(e) if e.kind() == IoKind::WouldBlock => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The next whole frame that has arrived, decoded; a protocol error as a message.
    pub(crate) fn next<T: serde::de::DeserializeOwned>(&mut self) -> Option<std::result::Result<T, String>> {
        match self.frames.next_frame() {
            Ok(Some(body)) => Some(wire::decode(body)),
            Ok(None) => None,
            Err(e) => Some(Err(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Envelope;

    #[tokio::test]
    async fn asks_whose_askers_gave_up_do_not_pile_up() {
        let (ours, _theirs) = StdStream::pair().unwrap();
        let (link, _read) = Link::<u64>::new(End::Parent, ours, 16).unwrap();
        let mut waiting = Vec::new();
        for i in 0..10_000u64 {
            let (reply, answer) = Reply::channel(None);
            let envelope = Envelope::new(i, None, Some(reply));
            let (ask, bytes) = link.prepare(&envelope, |_| Ok(Vec::new())).unwrap();
            link.commit(ask, bytes, envelope);
            if i % 100 == 0 {
                waiting.push(answer); // still waiting
            } // else: the asker gave up at once
        }
        let pending = link.asks.lock().as_ref().map_or(0, HashMap::len);
        assert!(pending < 1_100, "{pending} asks are kept for 100 askers that still wait");
        for (n, answer) in waiting.iter_mut().enumerate() {
            let still_open = matches!(answer.try_recv(), Err(oneshot::error::TryRecvError::Empty));
            assert!(still_open, "ask {n} was dropped while its asker waits");
        }
    }
}
