//! Process workers, seen from the parent: a child process of this executable per worker.
//! (`child.rs` is the other end of the link.)
//!
//! A supervisor task per child reads its frames, sends it a `Stop` frame when it is
//! asked to stop and SIGKILL when it is killed, and learns of its end through its pidfd.
//! Then it takes the frames the child wrote before it ended (they are all in the socket
//! by then), reaps it, and calls the shared end step: so a child's `Down` follows its
//! death at once, and its locks (in a `host:` scope) died with its process. Membership
//! events reach the child as frames queued by the registry itself (see `registry.rs`).
//! The spawns a child asks for are served by tasks of their own, with this process's
//! spawner (see [`serve_spawn`]).
//!
//! A forwarder per child places the messages the child sends to other workers, in order
//! for each receiver, waiting for room in their mailboxes without holding up the child's
//! other frames or its messages to other receivers (`forward.rs`). A child's `Down` waits
//! until its sends are placed, unless it was killed, as a task's sends are in their
//! mailboxes before its `Down`.

use std::io;
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::Arc;

use crate::cell::{self, Cell, Route};
use crate::forward::Forwarder;
use crate::link::{Link, Reader, Tongue};
use crate::shared::{Registered, Shared};
use crate::sys::Child;
use crate::wire::{self, Init, Spawned, ToChild, ToParent, WireError};
use crate::{path, spawns, Envelope, Error, ErrorKind, Message, Props, Reason, Reply, Result};

/// Starts a process worker at `path` from the entry registered as `entry`; `registered`
/// is called under the registry lock once it is registered and its `Up` published.
pub(crate) async fn start<M: Message>(
    shared: &Arc<Shared<M>>,
    path: &str,
    props: Props,
    entry: &str,
    registered: Registered<M>,
) -> Result<Arc<Cell<M>>> {
    shared.check_entry(path, entry)?;
    path::validate(path, true)?;
    let scope = shared.scope.url().to_owned();
    if !scope.starts_with("host:") {
        let message = format!(
            "a process worker takes its locks in a scope that processes share (host:), and this cluster's is {scope}"
        );
        return Err(Error::new(ErrorKind::Scope, message).with_path(path));
    }
    let spawn_error = |e: io::Error| {
        Error::new(ErrorKind::Spawn, format!("cannot start a child process: {e}")).with_path(path).with_source(e)
    };
    let (ours, theirs) = UnixStream::pair().map_err(spawn_error)?;
    let child = Child::spawn(&shared.child_args, theirs).await.map_err(spawn_error)?;
    let (link, read) = Link::new(tongue(), ours, shared.mailbox).map_err(spawn_error)?;

    let mut registry = shared.registry.lock();
    let path = match registry.claim(path) {
        Ok(path) => path,
        Err(err) => {
            drop(registry);
            drop(child); // kills and reaps it: it has not started anything yet
            return Err(err);
        }
    };
    let cell =
        Arc::new(Cell::linked(cell::next_id(), path.clone(), props.clone(), Some(child.pid()), link.clone(), route()));
    let capacity = u32::try_from(shared.mailbox).unwrap_or(u32::MAX);
    let init = Init { entry: entry.to_owned(), id: cell.id, path, props, scope, capacity };
    link.send(&init)?; // the first frame, before any message can be sent to the worker
    registry.insert(cell.clone());
    registry.subscribe_link(link.clone(), event_frame, false);
    registered(&cell);
    drop(registry);

    let forward = Forwarder::new(shared.clone(), link.clone(), false);
    let supervisor = Supervisor { shared: shared.clone(), cell: cell.clone(), link, forward, exit: None, fatal: None };
    tokio::spawn(supervisor.run(child, Reader::new(read)));
    Ok(cell)
}

/// What the parent's end of a link to a child says of itself: credits for the child's
/// forwarded sends, answers to the child's asks.
pub(crate) fn tongue<M: Message>() -> Tongue<M> {
    Tongue {
        credit: |(id, to), n| {
            wire::encode(&ToChild::<()>::Credit { to: to.clone(), id: *id, n }).expect("a credit frame encodes")
        },
        reply: |ask, message| wire::encode(&ToChild::Answer { ask, result: Ok(message) }),
        no_reply: |ask| {
            let error = Error::new(ErrorKind::NoReply, "the worker dropped the ask without replying");
            answer_error(ask, &error)
        },
        fail: answer_error,
    }
}

/// The frame that fails a child's ask `ask` with `error`.
fn answer_error(ask: u64, error: &Error) -> Vec<u8> {
    let result = Err(WireError::from(error));
    wire::encode(&ToChild::<()>::Answer { ask, result }).unwrap_or_else(|too_long| {
        let result = Err(WireError::from(&too_long));
        wire::encode(&ToChild::<()>::Answer { ask, result }).expect("a short error encodes")
    })
}

/// How the parent reaches its child's worker (it signals stops and kills itself).
fn route<M: Message>() -> Route<M> {
    Route {
        deliver: |_, ask, envelope| {
            let (from, message) = (envelope.sender().cloned(), envelope.message());
            wire::encode(&ToChild::Deliver { from, ask, message })
        },
        control: None,
        window: "mailbox",
        ours: true,
    }
}

/// The frame that tells a child of the `Up` of `cell`, or its `Down` for `reason`.
fn event_frame<M>(cell: &Cell<M>, reason: Option<&Reason>) -> Vec<u8> {
    let (id, path) = (cell.id, cell.path.clone());
    let frame = match reason {
        None => ToChild::<()>::Up { id, path, props: cell.props.clone(), pid: cell.pid },
        Some(reason) => ToChild::Down { id, path, reason: reason.clone() },
    };
    wire::encode(&frame).expect("a frame without a message encodes")
}

struct Supervisor<M> {
    shared: Arc<Shared<M>>,
    cell: Arc<Cell<M>>,
    link: Arc<Link<M>>,
    forward: Arc<Forwarder<M>>,
    /// How the child said its entry ended (its last frame).
    exit: Option<std::result::Result<(), String>>,
    /// Why the child was killed for breaking the protocol.
    fatal: Option<String>,
}

impl<M: Message> Supervisor<M> {
    async fn run(mut self, mut child: Child, mut reader: Reader) {
        let (mut killed, mut stop_sent, mut reading) = (false, false, true);
        loop {
            tokio::select! {
                biased;
                () = child.exited() => break,
                () = self.cell.kill.wait(), if !killed => {
                    killed = true;
                    child.kill();
                }
                () = self.cell.stopping.wait(), if !stop_sent => {
                    stop_sent = true;
                    let _ = self.link.send(&ToChild::<()>::Stop);
                }
                filled = reader.fill(), if reading => {
                    reading = matches!(filled, Ok(true));
                    self.take_frames(&mut reader);
                }
            }
            if self.fatal.is_some() && !killed {
                (killed, reading) = (true, false);
                child.kill();
            }
        }
        // The child is gone: all it wrote is in the socket now.
        while reading && self.fatal.is_none() {
            reading = matches!(reader.fill_now(), Ok(true));
            self.take_frames(&mut reader);
        }
        let status = child.reap();
        let mut reason = self.reason(status);
        // Like a task's sends, a child's sends are placed before its `Down`, unless it
        // is killed, before or while they wait: a killed task's waiting send is dropped too.
        if reason == Reason::Killed {
            self.forward.close().await;
        }
        tokio::select! {
            () = self.forward.placed() => {}
            () = self.cell.kill.wait() => {
                self.forward.close().await;
                reason = Reason::Killed;
            }
        }
        self.link.close();
        self.shared.end(&self.cell, reason).await;
    }

    /// Handles the frames that have arrived, until one cannot be decoded.
    fn take_frames(&mut self, reader: &mut Reader) {
        while self.fatal.is_none() {
            let Some(frame) = reader.next::<ToParent<M>>() else { return };
            match frame {
                Ok(ToParent::Send { to, id, ask, message }) => {
                    let from = Some(self.cell.path.clone());
                    let reply = ask.map(|ask| Reply::remote(self.link.clone(), ask, from.clone()));
                    self.forward.message(to, id, Envelope::new(message, from, reply));
                }
                Ok(ToParent::Reply { ask, message }) => self.link.answer(ask, Some(Ok(message))),
                Ok(ToParent::NoReply { ask }) => self.link.answer(ask, None),
                Ok(ToParent::Credit { to, id, n }) => self.link.credit(&(id, to), n),
                // After the messages the child sent it before.
                Ok(ToParent::Stop { to, id }) => self.forward.stop(to, id),
                Ok(ToParent::Kill { to, id }) => drop(self.shared.find(&to, id).map(|cell| cell.request_kill())),
                Ok(ToParent::Spawn(request)) => {
                    spawns::serve(self.shared.clone(), self.link.clone(), request, answer_frame)
                }
                Ok(ToParent::Exit(result)) => self.exit = Some(result),
                Err(e) => self.fatal = Some(format!("its process sent a frame that cannot be decoded: {e}")),
            }
        }
    }

    /// How the worker ended, from its exit status and its last frame.
    fn reason(&mut self, status: io::Result<ExitStatus>) -> Reason {
        if let Some(fatal) = self.fatal.take() {
            return Reason::Failed(fatal);
        }
        match (status, self.exit.take()) {
            (Ok(status), _) if status.signal().is_some() => Reason::Killed,
            (Ok(status), Some(Ok(()))) if status.success() => Reason::Normal,
            (Err(_), Some(Ok(()))) => Reason::Normal,
            (_, Some(Err(message))) => Reason::Failed(message),
            (Ok(status), _) => Reason::Failed(format!("its process exited ({status}) before its entry returned")),
            (Err(e), None) => Reason::Failed(format!("its process ended, and its exit status is unknown: {e}")),
        }
    }
}

/// The frame that answers request `request`; an answer too long for a frame becomes a
/// [`Codec`](ErrorKind::Codec) error, so that every request is answered.
fn answer_frame(request: u64, result: std::result::Result<Spawned, WireError>) -> Vec<u8> {
    wire::encode(&ToChild::<()>::Spawned { request, result }).unwrap_or_else(|err| {
        let result = Err(WireError::from(&err));
        wire::encode(&ToChild::<()>::Spawned { request, result }).expect("a short error encodes")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_too_long_for_a_frame_is_still_an_answer() {
        let huge = "x".repeat(wire::MAX_FRAME);
        let err = Error::new(ErrorKind::UnknownEntry, huge);
        let frame = answer_frame(7, Err(WireError::from(&err)));
        let answer = wire::decode::<ToChild<u64>>(&frame[4..]).unwrap();
        let ToChild::Spawned { request: 7, result: Err(err) } = answer else { panic!("{answer:?}") };
        assert_eq!(Error::from(err).kind(), ErrorKind::Codec);
    }
}
