//! A link: one end of a socket between two processes of a cluster (a parent and one of
//! its process workers, or two nodes), as both ends use it. What differs between them is
//! the set of frames each end speaks, which the link is given as a [`Tongue`].
//!
//! Frames are encoded by whoever sends and queued for a writer task, which writes what
//! has queued up in one go. Messages are flow controlled by credits, per receiver: each
//! worker on the other end that is sent messages has a window of `capacity` credits
//! (made at its first message, dropped when all its credits are back), each message
//! takes one of its receiver's, and the other end returns them in `Credit` frames that
//! name the receiver by id and path (ids are counted per process: a process may know
//! workers of several others with one id) (the child when its worker has received a message, the parent or a
//! node when it has placed a forwarded one in its receiver's mailbox). So a receiver that
//! stops taking messages holds up only the messages sent to it. Everything else
//! (replies, events, credits, stops) is not counted, so a reader never waits and no
//! frame waits behind a message that cannot be placed.

use std::collections::HashMap;
use std::io::{self, ErrorKind as IoKind};
use std::os::unix::net::UnixStream as StdStream;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{tcp, unix, TcpStream, UnixStream};
use tokio::sync::{mpsc, oneshot, Semaphore, TryAcquireError};

use crate::message::ReplyPath;
use crate::wire::{self, Frames, Outbox};
use crate::{Envelope, Message, Path, Reply, Result};

/// The frames a link's own machinery sends, in the language of its other end: the
/// credits it owes, and the answers to asks that came over it.
pub(crate) struct Tongue<M> {
    /// `n` credits for a receiver.
    pub(crate) credit: fn(&Receiver, u32) -> Vec<u8>,
    pub(crate) reply: fn(u64, &M) -> Result<Vec<u8>>,
    pub(crate) no_reply: fn(u64) -> Vec<u8>,
    /// The ask could not be delivered: the worker is gone, or its mailbox closed.
    pub(crate) fail: fn(u64, &crate::Error) -> Vec<u8>,
}

/// The read half of a link's socket.
pub(crate) enum ReadHalf {
    Unix(unix::OwnedReadHalf),
    Tcp(tcp::OwnedReadHalf),
}

type WriteHalf = Pin<Box<dyn AsyncWrite + Send>>;

/// What the writer task is given.
enum Out {
    /// An encoded frame.
    Frame(Vec<u8>),
    /// Credits are owed: send them.
    Nudge,
    /// Answer once everything queued before has been written.
    Flush(oneshot::Sender<()>),
    /// Write what is queued before, then shut the socket down: the other end sees it end.
    Shutdown,
}

/// Why a message was not queued on a link.
pub(crate) enum Refused {
    /// The link is closed: the other end is gone.
    Closed,
    /// No credit is left in the receiver's window.
    Full,
}

/// A worker on the other end, as messages and credits name it: its id and its path.
pub(crate) type Receiver = (u64, Path);

/// Credits for messages the other end can still take, by receiver; `None` once the link
/// is closed.
type Windows = Mutex<Option<HashMap<Receiver, Arc<Semaphore>>>>;

pub(crate) struct Link<M> {
    out: mpsc::UnboundedSender<Out>,
    windows: Windows,
    /// The size of each receiver's window.
    capacity: usize,
    /// Asks sent over the link that await their answer, by ask id; `None` once closed.
    asks: Mutex<Option<HashMap<u64, Reply<M>>>>,
    next_ask: AtomicU64,
    /// Credits owed to the other end, by receiver, sent by the writer.
    owed: Arc<Mutex<HashMap<Receiver, u32>>>,
    /// Set once the other end is gone.
    closed: AtomicBool,
    tongue: Tongue<M>,
}

impl<M> Link<M> {
    /// Drops `receiver`'s window if all its credits are back and no sender holds it.
    fn prune(&self, receiver: &Receiver) {
        let mut windows = self.windows.lock();
        let Some(windows) = windows.as_mut() else { return };
        let whole = windows
            .get(receiver)
            .is_some_and(|window| Arc::strong_count(window) == 1 && window.available_permits() >= self.capacity);
        if whole {
            windows.remove(receiver);
        }
    }

    /// Whether the link is closed: the other end is gone.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire) || self.out.is_closed()
    }

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

impl<M: Send> ReplyPath<M> for Link<M> {
    fn reply(&self, ask: u64, message: &M) -> Result<()> {
        let frame = (self.tongue.reply)(ask, message)?;
        wire::pushed(self, frame)
    }

    fn no_reply(&self, ask: u64) {
        self.push((self.tongue.no_reply)(ask));
    }

    fn fail(&self, ask: u64, error: &crate::Error) {
        self.push((self.tongue.fail)(ask, error));
    }
}

impl<M: Message> Link<M> {
    /// A link over the Unix socket `stream` with a window of `capacity` messages, and
    /// the read half. Must be called within the runtime, where the writer task runs.
    pub(crate) fn new(tongue: Tongue<M>, stream: StdStream, capacity: usize) -> io::Result<(Arc<Link<M>>, ReadHalf)> {
        stream.set_nonblocking(true)?;
        let (read, write) = UnixStream::from_std(stream)?.into_split();
        Ok((Link::over(tongue, Box::pin(write), capacity), ReadHalf::Unix(read)))
    }

    /// A link over the TCP connection `stream`, as [`new`](Link::new).
    pub(crate) fn tcp(tongue: Tongue<M>, stream: TcpStream, capacity: usize) -> (Arc<Link<M>>, ReadHalf) {
        let (read, write) = stream.into_split();
        (Link::over(tongue, Box::pin(write), capacity), ReadHalf::Tcp(read))
    }

    fn over(tongue: Tongue<M>, write: WriteHalf, capacity: usize) -> Arc<Link<M>> {
        let (out, rx) = mpsc::unbounded_channel();
        let owed = Arc::new(Mutex::new(HashMap::new()));
        tokio::spawn(write_frames(tongue.credit, rx, write, owed.clone()));
        Arc::new(Link {
            out,
            windows: Mutex::new(Some(HashMap::new())),
            capacity,
            asks: Mutex::new(Some(HashMap::new())),
            next_ask: AtomicU64::new(1),
            owed,
            closed: AtomicBool::new(false),
            tongue,
        })
    }

    /// The size of a receiver's window.
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

    /// The window of `receiver`, made if it has none.
    fn window(&self, receiver: &Receiver) -> Result<Arc<Semaphore>, Refused> {
        let mut windows = self.windows.lock();
        let windows = windows.as_mut().ok_or(Refused::Closed)?;
        if let Some(window) = windows.get(receiver) {
            return Ok(window.clone());
        }
        let window = Arc::new(Semaphore::new(self.capacity));
        windows.insert(receiver.clone(), window.clone());
        Ok(window)
    }

    /// Takes a credit of `receiver`'s window, waiting for one.
    pub(crate) async fn acquire(&self, receiver: &Receiver) -> Result<(), Refused> {
        let mut waiter = Waiter { link: self, receiver, window: Some(self.window(receiver)?) };
        let acquired = match &waiter.window {
            Some(window) => window.acquire().await.map(|permit| permit.forget()).map_err(|_| Refused::Closed),
            None => Err(Refused::Closed),
        };
        waiter.window = None; // a credit taken, or the link closed: nothing to drop
        acquired
    }

    /// Takes a credit of `receiver`'s window if one is left.
    pub(crate) fn try_acquire(&self, receiver: &Receiver) -> Result<(), Refused> {
        match self.window(receiver)?.try_acquire() {
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

    /// The other end returned `n` credits of `receiver`'s window (never more than it
    /// took). A window whose credits are all back, and that no sender is waiting on, is
    /// dropped: a window is kept only for a receiver that has messages on their way.
    pub(crate) fn credit(&self, receiver: &Receiver, n: u32) {
        if let Some(window) = self.windows.lock().as_ref().and_then(|windows| windows.get(receiver)) {
            // Senders that wait hold a clone of the window: permits go to them first.
            let taken = self.capacity.saturating_sub(window.available_permits());
            window.add_permits((n as usize).min(taken));
        }
        self.prune(receiver);
    }

    /// Owes the other end a credit of `receiver`'s window; the writer sends what is owed.
    pub(crate) fn owe(&self, receiver: &Receiver) {
        let mut owed = self.owed.lock();
        let nudge = owed.is_empty();
        *owed.entry(receiver.clone()).or_insert(0) += 1;
        drop(owed);
        if nudge {
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

    /// Closes the link: waiting and later deliveries fail, every pending ask fails, and
    /// the socket is shut down once what was queued before is written.
    pub(crate) fn close(&self) {
        let _ = self.out.send(Out::Shutdown);
        self.closed.store(true, Ordering::Release);
        for window in self.windows.lock().take().into_iter().flat_map(HashMap::into_values) {
            window.close();
        }
        drop(self.asks.lock().take());
    }
}

/// A sender waiting for a credit of its receiver's window. One that gives up (its send
/// dropped) hands back what it was being given, which may make the window whole: then
/// the window goes, as it would have when its last credit came back.
struct Waiter<'a, M> {
    link: &'a Link<M>,
    receiver: &'a Receiver,
    window: Option<Arc<Semaphore>>,
}

impl<M> Drop for Waiter<'_, M> {
    fn drop(&mut self) {
        let gave_up = self.window.take().is_some();
        if gave_up {
            self.link.prune(self.receiver);
        }
    }
}

/// Writes what is queued, in batches, until the link is dropped or the socket fails.
async fn write_frames(
    credit: fn(&Receiver, u32) -> Vec<u8>,
    mut rx: mpsc::UnboundedReceiver<Out>,
    mut write: WriteHalf,
    owed: Arc<Mutex<HashMap<Receiver, u32>>>,
) {
    const BATCH: usize = 64 * 1024;
    let mut batch = Vec::with_capacity(BATCH);
    let mut flushes = Vec::new();
    let mut shutdown = false;
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(item) = next {
            match item {
                Out::Frame(bytes) => batch.extend_from_slice(&bytes),
                Out::Nudge => {}
                Out::Flush(tx) => flushes.push(tx),
                Out::Shutdown => shutdown = true,
            }
            next = if batch.len() < BATCH && !shutdown { rx.try_recv().ok() } else { None };
        }
        for (receiver, n) in std::mem::take(&mut *owed.lock()) {
            batch.extend_from_slice(&credit(&receiver, n));
        }
        if write.write_all(&batch).await.is_err() {
            return;
        }
        batch.clear();
        for tx in flushes.drain(..) {
            let _ = tx.send(());
        }
        if shutdown {
            let _ = write.shutdown().await;
            return;
        }
    }
}

/// Reads frames from the other end.
pub(crate) struct Reader {
    read: ReadHalf,
    frames: Frames,
}

impl Reader {
    pub(crate) fn new(read: ReadHalf) -> Self {
        Reader { read, frames: Frames::default() }
    }

    /// Waits for more bytes; false at the end of the stream. Cancel safe.
    pub(crate) async fn fill(&mut self) -> io::Result<bool> {
        let spare = self.frames.spare();
        let n = match &mut self.read {
            ReadHalf::Unix(read) => read.read_buf(spare).await?,
            ReadHalf::Tcp(read) => read.read_buf(spare).await?,
        };
        Ok(n > 0)
    }

    /// Takes the bytes that have arrived, without waiting; false at the end of the
    /// stream or when none are left.
    pub(crate) fn fill_now(&mut self) -> io::Result<bool> {
        let spare = self.frames.spare();
        let read = match &mut self.read {
            ReadHalf::Unix(read) => read.try_read_buf(spare),
            ReadHalf::Tcp(read) => read.try_read_buf(spare),
        };
        match read {
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

    /// Second review: a sender that gave up after the credits of its window came back to
    /// it left the window whole and in the table for as long as the link lived.
    #[tokio::test]
    async fn a_window_goes_when_its_last_waiter_gives_up() {
        use std::future::Future;
        use std::task::{Context, Waker};

        let (ours, _theirs) = StdStream::pair().unwrap();
        let (link, _read) = Link::<u64>::new(crate::parent::tongue(), ours, 1).unwrap();
        let receiver: Receiver = (7, Path::from_valid("/r".to_owned()));
        assert!(link.try_acquire(&receiver).is_ok());
        let mut waiting = Box::pin(link.acquire(&receiver));
        let mut cx = Context::from_waker(Waker::noop());
        assert!(waiting.as_mut().poll(&mut cx).is_pending(), "the window is used up");
        link.credit(&receiver, 1); // handed to the waiter, which gives up before it runs
        drop(waiting);
        let windows = link.windows.lock().as_ref().map_or(0, HashMap::len);
        assert_eq!(windows, 0, "a whole window nobody waits on is kept");
    }

    #[tokio::test]
    async fn asks_whose_askers_gave_up_do_not_pile_up() {
        let (ours, _theirs) = StdStream::pair().unwrap();
        let (link, _read) = Link::<u64>::new(crate::parent::tongue(), ours, 16).unwrap();
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
