//! The frames nodes exchange over TCP: the handshake first, then [`ToNode`] both ways.
//! Framing (a `u32` length and a postcard body) is the one of every link (`wire.rs`).

use serde::{Deserialize, Serialize};

use crate::wire::{SpawnRequest, Spawned, WireError};
use crate::{NodeId, Path, Props, Reason};

/// The first frame each side sends: who it is, and a challenge for the other side.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Hello {
    /// The cluster's name: nodes of other clusters refuse each other.
    pub(crate) cluster: String,
    pub(crate) node: NodeId,
    /// Milliseconds since the Unix epoch when the node started.
    pub(crate) started_ms: u64,
    pub(crate) challenge: [u8; 32],
}

/// The second frame each side sends: its answer to the other's challenge, which only a
/// holder of the cluster's secret can give.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Proof(pub(crate) [u8; 32]);

/// From a node to another, after the handshake.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum ToNode<M> {
    /// A worker of the sender is up (the first of these are its workers when the link
    /// opened); `pid` is set for a process worker.
    Up { id: u64, path: Path, props: Props, pid: Option<u32> },
    /// A worker of the sender is down.
    Down { id: u64, path: Path, reason: Reason },
    /// A message for the worker `to` of the receiver (whose id is `id`); `ask` is set
    /// when the sender awaits a reply.
    Send { to: Path, id: u64, from: Option<Path>, ask: Option<u64>, message: M },
    /// The reply to an ask the receiver sent.
    Reply { ask: u64, message: M },
    /// The ask the receiver sent failed (its worker ended, dropped it, or cannot reply).
    Failed { ask: u64, error: WireError },
    /// The sender placed `n` of the receiver's sends to its worker `to` (whose id is
    /// `id`): room for as many more.
    Credit { to: Path, id: u64, n: u32 },
    /// Asks the worker `to` of the receiver to stop.
    Stop { to: Path, id: u64 },
    /// Kills the worker `to` of the receiver.
    Kill { to: Path, id: u64 },
    /// Asks the receiver to spawn a worker; answered by a `Spawned` frame.
    Spawn(SpawnRequest),
    /// The answer to the receiver's `Spawn` request `request`.
    Spawned { request: u64, result: std::result::Result<Spawned, WireError> },
    /// The sender leaves the cluster: its workers have gone down, and its record goes.
    Leave,
}
