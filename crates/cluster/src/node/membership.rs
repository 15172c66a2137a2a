//! Membership in the store, kept as locks of the cluster's distributed scope (etcd,
//! PostgreSQL, Redis): no table or protocol of our own, and the store's own leases.
//!
//! Under the prefix `latchkey-cluster/<cluster>/`:
//! - `nodes/<addr>`: a node's record, held by the node for as long as it is a member. Its
//!   fencing token is the node's incarnation, greater at each start at that address; the
//!   record dies with the node's session (the scope's TTL after the node dies or is cut
//!   off from the store).
//! - `join`: held while a node registers and connects to the members it finds, so that
//!   two nodes that join at once find each other.
//! - `paths/<path>`: held for each worker of the node, so that a path is unique across
//!   the cluster, decided by the store.
//! - `numbers`: a semaphore, a permit of which is taken and given back for each path that
//!   ends in `/`; the grant's fencing token, which the store makes greater at every
//!   grant, is the path's last segment. Its permits let numbered spawns of several nodes
//!   run at once, and one node that dies holding a permit holds up nobody.
//!
//! A node learns that another has gone by waiting for its record, which the store grants
//! when the holder's session ends (a watch, a notification or a pub/sub message, as the
//! scope waits): no polling. It gives the record back at once.

use latchkey::{Guard, Scope};

use crate::{Error, ErrorKind, Result, MAX_PATH_LEN};

/// How many paths the nodes of a cluster can be numbering at once (see `numbers`).
const NUMBERS_AT_ONCE: u32 = 64;

/// A node's view of the store.
pub(crate) struct Membership {
    store: Scope,
    /// `latchkey-cluster/<cluster>/`.
    prefix: String,
}

impl Membership {
    /// Opens the store at `url` for the cluster `cluster`.
    pub(crate) async fn open(url: &str, cluster: &str) -> Result<Membership> {
        let store = Scope::connect(url).await.map_err(|e| {
            let message = format!("cannot open the store {url} to join the cluster {cluster:?}: {e}");
            Error::new(ErrorKind::Node, message).with_source(e)
        })?;
        Ok(Membership { store, prefix: format!("latchkey-cluster/{cluster}/") })
    }

    /// The store `store` (the cluster's lock scope), for the cluster `cluster`.
    pub(crate) fn over(store: Scope, cluster: &str) -> Membership {
        Membership { store, prefix: format!("latchkey-cluster/{cluster}/") }
    }

    fn record(&self, addr: &str) -> String {
        format!("{}nodes/{addr}", self.prefix)
    }

    /// Held while this node registers and connects to the members it finds.
    pub(crate) async fn joining(&self) -> Result<Guard<'static>> {
        let name = format!("{}join", self.prefix);
        self.store.lock(&name).await.map_err(|e| self.failed("take the join lock", e))
    }

    /// Takes this node's record: its guard, whose fencing token is the incarnation. Waits
    /// while an earlier incarnation at `addr` still holds it (until its lease runs out).
    pub(crate) async fn register(&self, addr: &str) -> Result<Guard<'static>> {
        self.store.lock(&self.record(addr)).await.map_err(|e| self.failed("take the node's record", e))
    }

    /// The addresses of the nodes whose records are held now.
    pub(crate) async fn members(&self) -> Result<Vec<String>> {
        let nodes = self.record("");
        let listed = self.store.list_async().await.map_err(|e| self.failed("list the members", e))?;
        let held = listed.into_iter().filter(|state| state.is_locked());
        Ok(held.filter_map(|state| state.name.as_str().strip_prefix(&nodes).map(str::to_owned)).collect())
    }

    /// Waits until the node at `addr` has lost its record, and gives it back.
    pub(crate) async fn gone(&self, addr: &str) -> Result<()> {
        let record = self.store.lock(&self.record(addr)).await.map_err(|e| self.failed("watch a member", e))?;
        let _ = record.release_async().await;
        Ok(())
    }

    /// The longest path a worker of this cluster can have: its claim is a lock name.
    pub(crate) fn max_path_len(&self) -> usize {
        latchkey::MAX_NAME_LEN.saturating_sub(self.prefix.len() + "paths".len()).min(MAX_PATH_LEN)
    }

    /// Claims `path` for a worker of this node: `None` if a worker of any node has it.
    pub(crate) async fn claim(&self, path: &str) -> Result<Option<Guard<'static>>> {
        let max = self.max_path_len();
        if path.len() > max {
            let message = format!(
                "in this cluster of nodes a path is at most {max} bytes (its claim in the store is a lock name of at \
                 most {} bytes)",
                latchkey::MAX_NAME_LEN
            );
            return Err(Error::new(ErrorKind::InvalidPath, message).with_path(path));
        }
        let name = format!("{}paths{path}", self.prefix);
        self.store.try_lock_async(&name).await.map_err(|e| self.failed("claim the path", e).with_path(path))
    }

    /// A number no worker of this cluster was given before, for a path that ends in `/`:
    /// the fencing token of a grant of the `numbers` semaphore (each grant's is its own,
    /// and greater than any before: increasing, never given twice, not consecutive).
    pub(crate) async fn number(&self) -> Result<u64> {
        let name = format!("{}numbers", self.prefix);
        let numbers = self.store.semaphore(&name, NUMBERS_AT_ONCE).map_err(|e| self.failed("number a path", e))?;
        let grant = numbers.acquire(1).await.map_err(|e| self.failed("number a path", e))?;
        let number = grant.fencing_token();
        let _ = grant.release_async().await;
        Ok(number)
    }

    fn failed(&self, what: &str, e: latchkey::Error) -> Error {
        Error::new(ErrorKind::Node, format!("cannot {what} in the store {}: {e}", self.store.url())).with_source(e)
    }
}
