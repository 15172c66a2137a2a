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

/// Where [`Cluster::spawn_on`](crate::Cluster::spawn_on) starts a worker, in a cluster of
/// nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Placement {
    /// This node.
    Here,
    /// The node given (one of [`Cluster::nodes`](crate::Cluster::nodes)).
    On(NodeId),
    /// The members in turn, in the order of [`Cluster::nodes`](crate::Cluster::nodes).
    RoundRobin,
    /// The member with the fewest live workers, as this node knows them (ties: the first
    /// in order).
    LeastWorkers,
}
