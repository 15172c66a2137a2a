//! Which node of a cluster that spans processes a worker runs on.

use serde::{Deserialize, Serialize};

/// A node of a cluster: the address it listens on and its incarnation, the fencing token
/// of its record in the store. A node that starts again has a greater incarnation, so it
/// is never taken for the one before.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeId {
    /// The address other nodes connect to (`host:port`).
    pub addr: String,
    /// The fencing token of the node's record: greater for each start at this address.
    pub incarnation: u64,
}

impl std::fmt::Display for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}#{}", self.addr, self.incarnation)
    }
}
