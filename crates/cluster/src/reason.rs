//! Why a worker went down.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a worker went down.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Reason {
    /// Its entry function returned `Ok`.
    Normal,
    /// Its entry function returned `Err` or panicked; the error or panic message. A
    /// process worker also fails when a frame it sent or was sent cannot be decoded, or
    /// when its process exits without reporting how its entry ended.
    Failed(String),
    /// It was stopped by force: [`kill`](crate::WorkerRef::kill), or a stop or shutdown whose
    /// grace period ran out. A process worker that dies by a signal (SIGKILL from
    /// anyone, the out-of-memory killer, an abort) is `Killed` too.
    Killed,
    /// The node it ran on died, left the store's lease, or can no longer be reached (a
    /// cluster of nodes, [`Builder::join`](crate::Builder::join)).
    NodeLost,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Normal => f.write_str("returned normally"),
            Reason::Failed(message) => write!(f, "failed: {message}"),
            Reason::Killed => f.write_str("killed"),
            Reason::NodeLost => f.write_str("its node was lost"),
        }
    }
}
