//! The wire protocol between a parent and its process workers.
//!
//! Each frame is a little-endian `u32` length followed by that many bytes of a
//! [postcard](https://docs.rs/postcard) encoding: an [`Init`] first from the parent, then
//! [`ToChild`] frames from the parent and [`ToParent`] frames from the child. A child
//! spawns through the parent: a [`SpawnRequest`], answered by a `Spawned` frame. A frame
//! longer than [`MAX_FRAME`], or one that does not decode to exactly its length, is a
//! protocol error that ends the link.
//!
//! Frames carry messages by reference when encoded (`ToChild<&M>`) and by value when
//! decoded (`ToChild<M>`): serde encodes both alike. Frames without a message encode the
//! same whatever the message type, so they are built as `ToChild<()>`.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::{Error, ErrorKind, Path, Props, Reason, Result};

/// The longest frame, in bytes (the length prefix excluded).
pub(crate) const MAX_FRAME: usize = 64 << 20;

/// The first frame: what the child is to run.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Init {
    /// The registered entry to run.
    pub(crate) entry: String,
    /// The worker's id in the parent's registry.
    pub(crate) id: u64,
    pub(crate) path: Path,
    pub(crate) props: Props,
    /// The URL of the cluster's lock scope, which the child opens.
    pub(crate) scope: String,
    /// The mailbox capacity: the child takes at most this many messages at a time, and
    /// may have at most this many sends waiting in the parent.
    pub(crate) capacity: u32,
}

/// From the parent to a child.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum ToChild<M> {
    /// A message for the child's mailbox; `ask` is set when the sender awaits a reply.
    Deliver { from: Option<Path>, ask: Option<u64>, message: M },
    /// The answer to an ask the child sent.
    Answer { ask: u64, result: std::result::Result<M, WireError> },
    /// A worker is up (the first of these are the members when the child started);
    /// `pid` is set for a process worker.
    Up { id: u64, path: Path, props: Props, pid: Option<u32> },
    /// A worker is down.
    Down { id: u64, path: Path, reason: Reason },
    /// The parent placed `n` of the child's sends to the worker `to` (whose id is `id`):
    /// room for as many more.
    Credit { to: Path, id: u64, n: u32 },
    /// The worker is asked to stop: intake is closed.
    Stop,
    /// The answer to the child's [`SpawnRequest`] `request`: the new worker, whose `Up`
    /// came before this frame, or why it was not spawned.
    Spawned { request: u64, result: std::result::Result<Spawned, WireError> },
}

/// From a child to the parent.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum ToParent<M> {
    /// A message for the worker `to` (whose id is `id`); `ask` is set when the child
    /// awaits a reply.
    Send { to: Path, id: u64, ask: Option<u64>, message: M },
    /// The reply to an ask the parent delivered.
    Reply { ask: u64, message: M },
    /// The ask was dropped unanswered.
    NoReply { ask: u64 },
    /// The child's worker `to` (whose id is `id`) received `n` messages: room for as
    /// many more.
    Credit { to: Path, id: u64, n: u32 },
    /// Asks the worker `to` to stop.
    Stop { to: Path, id: u64 },
    /// Kills the worker `to`.
    Kill { to: Path, id: u64 },
    /// Asks the parent to spawn a worker; answered by a `Spawned` frame.
    Spawn(SpawnRequest),
    /// The entry has ended (the last frame): `Err` carries the error or panic message.
    Exit(std::result::Result<(), String>),
}

/// What a spawn starts: a task of the parent, or another child process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum WorkerKind {
    Task,
    Process,
}

/// A spawn asked of another process (a child's of its parent, a node's of another), which
/// spawns with its own cluster.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct SpawnRequest {
    /// Names the answer, among the child's requests.
    pub(crate) request: u64,
    /// As given: the parent checks it, and numbers a path that ends in `/`.
    pub(crate) path: String,
    pub(crate) props: Props,
    pub(crate) entry: String,
    pub(crate) kind: WorkerKind,
}

/// The worker a spawn started, as its `Up` told the child.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Spawned {
    pub(crate) id: u64,
    /// The final path.
    pub(crate) path: Path,
    pub(crate) props: Props,
    pub(crate) pid: Option<u32>,
}

/// An [`Error`] on the wire.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct WireError {
    code: u32,
    message: String,
    path: Option<String>,
}

impl From<&Error> for WireError {
    fn from(err: &Error) -> Self {
        WireError { code: err.code(), message: err.message().to_owned(), path: err.path().map(str::to_owned) }
    }
}

impl From<WireError> for Error {
    fn from(wire: WireError) -> Self {
        let kind = ErrorKind::from_code(wire.code).unwrap_or(ErrorKind::NoReply);
        let err = Error::new(kind, wire.message);
        match wire.path {
            Some(path) => err.with_path(path),
            None => err,
        }
    }
}

/// Where encoded frames are queued to be written: the writer of a link.
pub(crate) trait Outbox: Send + Sync {
    /// Queues an encoded frame; false if the link is closed or gone.
    fn push(&self, frame: Vec<u8>) -> bool;
}

/// Encodes `frame` and queues it in `out`.
pub(crate) fn send<T: Serialize>(out: &dyn Outbox, frame: &T) -> Result<()> {
    pushed(out, encode(frame)?)
}

/// Queues the encoded `frame` in `out`; an error if the link is gone.
pub(crate) fn pushed(out: &dyn Outbox, frame: Vec<u8>) -> Result<()> {
    match out.push(frame) {
        true => Ok(()),
        false => Err(Error::new(ErrorKind::Closed, "the other process of the link is gone")),
    }
}

/// Encodes `frame` with its length prefix.
pub(crate) fn encode<T: Serialize>(frame: &T) -> Result<Vec<u8>> {
    let fail = |detail: String| Error::new(ErrorKind::Codec, format!("cannot encode a message: {detail}"));
    let mut bytes = postcard::to_extend(frame, vec![0; 4]).map_err(|e| fail(e.to_string()))?;
    let len = bytes.len() - 4;
    if len > MAX_FRAME {
        return Err(fail(format!("it takes {len} bytes, more than the {MAX_FRAME} a frame holds")));
    }
    bytes[..4].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(bytes)
}

/// Decodes one frame's body (without its length prefix), all of it.
pub(crate) fn decode<T: DeserializeOwned>(body: &[u8]) -> std::result::Result<T, String> {
    match postcard::take_from_bytes(body) {
        Ok((frame, [])) => Ok(frame),
        Ok((_, rest)) => Err(format!("{} bytes left over after the frame", rest.len())),
        Err(e) => Err(e.to_string()),
    }
}

/// Bytes read from a socket, cut into frames.
#[derive(Default)]
pub(crate) struct Frames {
    buf: Vec<u8>,
    /// Where the next frame starts in `buf`.
    start: usize,
}

impl Frames {
    /// The buffer to read more bytes into (at its end), with room for a large read.
    pub(crate) fn spare(&mut self) -> &mut Vec<u8> {
        self.buf.drain(..self.start);
        self.start = 0;
        self.buf.reserve(READ_SIZE);
        &mut self.buf
    }

    /// The next whole frame's body, if it has arrived; an error if its length is too large.
    pub(crate) fn next_frame(&mut self) -> std::result::Result<Option<&[u8]>, String> {
        let rest = &self.buf[self.start..];
        let Some(prefix) = rest.get(..4) else { return Ok(None) };
        let len = u32::from_le_bytes(prefix.try_into().expect("4 bytes")) as usize;
        if len > MAX_FRAME {
            return Err(format!("a frame of {len} bytes is longer than the {MAX_FRAME} allowed"));
        }
        if rest.len() < 4 + len {
            return Ok(None);
        }
        let body = self.start + 4..self.start + 4 + len;
        self.start = body.end;
        Ok(Some(&self.buf[body]))
    }

    /// Whether bytes of an unfinished frame are left.
    #[cfg(test)]
    fn has_partial(&self) -> bool {
        self.start < self.buf.len()
    }
}

/// How many bytes one read asks for at least.
const READ_SIZE: usize = 64 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    impl Frames {
        fn extend(&mut self, bytes: &[u8]) {
            self.spare().extend_from_slice(bytes);
        }
    }

    fn frames_of(bytes: &[u8]) -> Frames {
        let mut frames = Frames::default();
        frames.extend(bytes);
        frames
    }

    #[test]
    fn frames_round_trip_in_pieces() {
        let message = String::from("hello");
        let a = encode(&ToChild::Deliver { from: Some(Path::new("/a").unwrap()), ask: Some(7), message: &message });
        let b = encode(&ToChild::<()>::Stop).unwrap();
        let all = [a.unwrap(), b].concat();
        let mut frames = Frames::default();
        let mut got = Vec::new();
        for byte in &all {
            frames.extend(std::slice::from_ref(byte));
            while let Some(body) = frames.next_frame().unwrap() {
                got.push(decode::<ToChild<String>>(body).unwrap());
            }
        }
        assert!(!frames.has_partial());
        assert!(matches!(&got[0], ToChild::Deliver { ask: Some(7), message, .. } if message == "hello"));
        assert!(matches!(got[1], ToChild::Stop));
    }

    #[test]
    fn garbage_is_a_clear_error() {
        let mut frames = frames_of(&[3, 0, 0, 0, 0xff, 0xff, 0xff]);
        let body = frames.next_frame().unwrap().unwrap();
        let err = decode::<ToChild<String>>(body).unwrap_err();
        assert!(!err.is_empty());

        let mut frames = frames_of(&u32::MAX.to_le_bytes());
        assert!(frames.next_frame().unwrap_err().contains("longer than"));

        // A valid frame followed by stray bytes inside the same length.
        let mut body = postcard::to_stdvec(&ToChild::<()>::Stop).unwrap();
        body.push(0);
        assert!(decode::<ToChild<String>>(&body).unwrap_err().contains("left over"));
    }

    #[test]
    fn a_partial_frame_waits_for_the_rest() {
        let whole = encode(&ToParent::<()>::Credit { to: Path::from_valid("/c".to_owned()), id: 7, n: 3 }).unwrap();
        let mut frames = frames_of(&whole[..whole.len() - 1]);
        assert!(frames.next_frame().unwrap().is_none());
        assert!(frames.has_partial());
        frames.extend(&whole[whole.len() - 1..]);
        let body = frames.next_frame().unwrap().unwrap();
        assert!(matches!(decode::<ToParent<String>>(body).unwrap(), ToParent::Credit { id: 7, n: 3, .. }));
    }

    #[test]
    fn errors_cross_the_wire() {
        let err = Error::new(ErrorKind::Closed, "it has ended").with_path("/x");
        let back = Error::from(WireError::from(&err));
        assert_eq!(back.kind(), ErrorKind::Closed);
        assert_eq!(back.to_string(), err.to_string());
    }
}
