//! A link to another node: what is sent over it ([`tongue`], [`route`], [`event_frame`])
//! and what is read from it ([`read`]).
//!
//! Messages to the other node's workers take credits of their receivers' windows on the
//! link (a mailbox's worth of messages not yet placed there); the other node places them
//! in order for each receiver, each once its mailbox has room, and returns a credit for
//! each (see `forward.rs`). Replies, events, credits, stops and kills are not counted.

use std::sync::Arc;

use super::frames::ToNode;
use crate::cell::{Cell, Control, Route};
use crate::forward::Forwarder;
use crate::link::{Link, Reader, Tongue};
use crate::shared::Shared;
use crate::spawns::Spawns;
use crate::wire::{self, SpawnRequest, Spawned, WireError};
use crate::{Envelope, Error, ErrorKind, Message, Reason, Reply};

/// What this node's end of a link says of itself.
pub(crate) fn tongue<M: Message>() -> Tongue<M> {
    Tongue {
        credit: |(id, to), n| {
            wire::encode(&ToNode::<()>::Credit { to: to.clone(), id: *id, n }).expect("a credit frame encodes")
        },
        reply: |ask, message| wire::encode(&ToNode::Reply { ask, message }),
        no_reply: |ask| failed(ask, &Error::new(ErrorKind::NoReply, "the worker dropped the ask without replying")),
        fail: failed,
    }
}

fn failed(ask: u64, error: &Error) -> Vec<u8> {
    wire::encode(&ToNode::<()>::Failed { ask, error: WireError::from(error) }).unwrap_or_else(|too_long| {
        let error = WireError::from(&too_long);
        wire::encode(&ToNode::<()>::Failed { ask, error }).expect("a short error encodes")
    })
}

/// How this node reaches the workers of another.
pub(crate) fn route<M: Message>() -> Route<M> {
    Route {
        deliver: |cell, ask, envelope| {
            let (to, id, from) = (cell.path.clone(), cell.id, envelope.sender().cloned());
            wire::encode(&ToNode::Send { to, id, from, ask, message: envelope.message() })
        },
        control: Some(|cell, control| {
            let (to, id) = (cell.path.clone(), cell.id);
            let frame = match control {
                Control::Stop => ToNode::<()>::Stop { to, id },
                Control::Kill => ToNode::Kill { to, id },
            };
            wire::encode(&frame).expect("a frame without a message encodes")
        }),
        window: "window of sends to its node",
        ours: false,
    }
}

/// The frame that tells another node of the `Up` of a worker of ours, or its `Down`.
pub(crate) fn event_frame<M>(cell: &Cell<M>, reason: Option<&Reason>) -> Vec<u8> {
    let (id, path) = (cell.id, cell.path.clone());
    let frame = match reason {
        None => ToNode::<()>::Up { id, path, props: cell.props.clone(), pid: cell.pid },
        Some(reason) => ToNode::Down { id, path, reason: reason.clone() },
    };
    wire::encode(&frame).expect("a frame without a message encodes")
}

/// The frame that asks another node to spawn.
pub(crate) fn spawn_frame(spawn: &SpawnRequest) -> crate::Result<Vec<u8>> {
    wire::encode(&ToNode::<()>::Spawn(spawn.clone()))
}

/// Reads the frames of the other node until the link ends; why it ended. `spawns` are
/// this node's spawns on the other, which its `Spawned` frames answer.
pub(crate) async fn read<M: Message>(
    shared: Arc<Shared<M>>,
    link: Arc<Link<M>>,
    spawns: Arc<Spawns<M>>,
    mut reader: Reader,
) -> String {
    let forward = Forwarder::new(shared.clone(), link.clone(), true);
    let why = loop {
        let mut left = None;
        while let Some(frame) = reader.next::<ToNode<M>>() {
            match frame {
                Ok(ToNode::Leave) => left = Some("it left the cluster".to_owned()),
                Ok(frame) => take(&shared, &link, &spawns, &forward, frame),
                Err(e) => left = Some(format!("it sent a frame that cannot be decoded: {e}")),
            }
            if left.is_some() {
                break;
            }
        }
        if let Some(why) = left {
            break why;
        }
        match reader.fill().await {
            Ok(true) => {}
            Ok(false) => break "it closed the connection".to_owned(),
            Err(e) => break format!("cannot read from it: {e}"),
        }
    };
    forward.close().await;
    why
}

fn take<M: Message>(
    shared: &Arc<Shared<M>>,
    link: &Arc<Link<M>>,
    spawns: &Spawns<M>,
    forward: &Arc<Forwarder<M>>,
    frame: ToNode<M>,
) {
    match frame {
        ToNode::Up { id, path, props, pid } => {
            // Paths are claimed in the store: a worker of another node still known at
            // this path has ended, and its `Down` is still on its way over its own link
            // (review finding: the new worker was dropped). It goes down now.
            let stale = shared.registry.lock().get(&path).filter(|cell| !cell.is_ours()).cloned();
            if let Some(stale) = stale {
                let why = "it had ended: a worker of another node took its path before its Down came";
                shared.ended(&stale, Reason::Failed(why.to_owned()));
            }
            let mut registry = shared.registry.lock();
            if registry.get(&path).is_none() {
                registry.insert(Arc::new(Cell::linked(id, path, props, pid, link.clone(), route())));
            }
        }
        ToNode::Down { id, path, reason } => {
            if let Some(cell) = shared.find(&path, id).filter(|cell| cell.is_behind(link)) {
                shared.ended(&cell, reason);
            }
        }
        ToNode::Send { to, id, from, ask, message } => {
            let reply = ask.map(|ask| Reply::remote(link.clone(), ask, from.clone()));
            forward.message(to, id, Envelope::new(message, from, reply));
        }
        ToNode::Reply { ask, message } => link.answer(ask, Some(Ok(message))),
        ToNode::Failed { ask, error } => link.answer(ask, Some(Err(Error::from(error)))),
        ToNode::Credit { to, id, n } => link.credit(&(id, to), n),
        ToNode::Stop { to, id } => forward.stop(to, id),
        ToNode::Kill { to, id } => drop(ours(shared, &to, id).map(|cell| cell.request_kill())),
        ToNode::Spawn(request) => crate::spawns::serve(shared.clone(), link.clone(), request, spawned_frame),
        ToNode::Spawned { request, result } => {
            let result = result.map_err(Error::from).and_then(|spawned| {
                // Its `Up` came first, on this link.
                let cell = shared.find(spawned.path.as_str(), spawned.id).filter(|cell| cell.is_behind(link));
                cell.ok_or_else(|| {
                    let message = "the worker spawned on the other node is already gone";
                    Error::new(ErrorKind::Closed, message).with_path(spawned.path.as_str())
                })
            });
            spawns.answer(request, result);
        }
        ToNode::Leave => {}
    }
}

/// The frame that answers the other node's spawn request `request`.
fn spawned_frame(request: u64, result: std::result::Result<Spawned, WireError>) -> Vec<u8> {
    wire::encode(&ToNode::<()>::Spawned { request, result }).unwrap_or_else(|err| {
        let result = Err(WireError::from(&err));
        wire::encode(&ToNode::<()>::Spawned { request, result }).expect("a short error encodes")
    })
}

/// Our live worker at `path` whose id is `id`.
fn ours<M: Message>(shared: &Shared<M>, path: &str, id: u64) -> Option<Arc<Cell<M>>> {
    shared.find(path, id).filter(|cell| cell.is_ours())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use parking_lot::Mutex;
    use tokio::net::{TcpListener, TcpStream};

    use super::*;
    use crate::local::Local;
    use crate::registry::Registry;
    use crate::{Path, Props};

    /// A link over a loopback TCP connection (its other end kept open).
    async fn tcp_link() -> (Arc<Link<u64>>, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (dialed, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let (link, _read) = Link::tcp(tongue(), dialed.unwrap(), 4);
        (link, accepted.unwrap().0)
    }

    /// Review: node B's worker at /p ends; node C learns it first (its own link from B),
    /// claims /p in the store and spawns a worker there; C's `Up` reaches this node (A)
    /// before B's `Down`, over another TCP link. A drops C's `Up` ("keep ours"), then
    /// removes B's cell on the `Down`: A never knows C's live worker at /p.
    #[tokio::test]
    async fn an_up_over_one_link_before_the_down_of_the_old_holder_over_another_is_kept() {
        let shared = Arc::new(Shared::<u64> {
            scope: latchkey::Scope::isolated(),
            entries: HashMap::new(),
            mailbox: 4,
            runtime: tokio::runtime::Handle::current(),
            registry: Mutex::new(Registry::new()),
            spawner: Arc::new(Local),
            nodes: None,
            child_args: Vec::new(),
        });
        let ((b, _b_end), (c, _c_end)) = (tcp_link().await, tcp_link().await);
        let spawns = Spawns::new();
        let forward = Forwarder::new(shared.clone(), b.clone(), true);
        let p = || Path::from_valid("/p".to_owned());
        let up = |id| ToNode::Up { id, path: p(), props: Props::new(), pid: None };
        take(&shared, &b, &spawns, &forward, up(7));
        take(&shared, &c, &spawns, &forward, up(3));
        take(&shared, &b, &spawns, &forward, ToNode::Down { id: 7, path: p(), reason: Reason::Normal });
        let cell = shared.registry.lock().get("/p").cloned();
        assert!(cell.is_some_and(|cell| cell.is_behind(&c)), "C's live worker at /p is unknown on A");
    }
}
