//! What every handle of one cluster shares, and the one interface through which a spawn
//! goes, whatever starts the worker.
//!
//! A cluster handle does not know which kind of process it is in. A spawn goes to the
//! cluster's [`Spawner`]: in the process that runs the cluster (`local.rs`) it starts a
//! task or a child process; inside a process worker (`child.rs`) it asks the parent. The
//! parent, serving a child's request (`parent.rs`), calls its own spawner. So the roles
//! meet here, and none of their modules imports another.

use std::collections::HashMap;
use std::ffi::OsString;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use latchkey::Scope;
use parking_lot::Mutex;

use crate::cell::Cell;
use crate::entry::{EntryFn, Start};
use crate::registry::Registry;
use crate::wire::WorkerKind;
use crate::{Error, ErrorKind, Message, NodeId, Placement, Props, Reason, Result};

/// Called under the registry lock once a spawned worker is registered and its `Up`
/// published: nothing else about the worker is published before it returns.
pub(crate) type Registered<M> = Box<dyn FnOnce(&Arc<Cell<M>>) + Send>;

/// A future a [`Spawner`] returns.
pub(crate) type Spawning<'a, M> = Pin<Box<dyn Future<Output = Result<Arc<Cell<M>>>> + Send + 'a>>;

/// A spawn, as asked.
pub(crate) struct SpawnOf<'a> {
    pub(crate) kind: WorkerKind,
    /// As given: checked, and numbered if it ends in `/`, where the worker is started.
    pub(crate) path: &'a str,
    pub(crate) props: Props,
    pub(crate) entry: &'a str,
}

/// Where this process's spawns go.
pub(crate) trait Spawner<M>: Send + Sync {
    /// Spawns a worker from a registered entry; the worker, once this process's registry
    /// knows it. `registered` is called where the worker is registered, if in this process.
    fn spawn<'a>(
        &'a self,
        shared: &'a Arc<Shared<M>>,
        spawn: SpawnOf<'a>,
        registered: Registered<M>,
    ) -> Spawning<'a, M>;

    /// Spawns a task worker of this process from a closure, which cannot cross processes.
    fn spawn_fn<'a>(
        &'a self,
        shared: &'a Arc<Shared<M>>,
        path: &'a str,
        props: Props,
        start: Start<M>,
    ) -> Spawning<'a, M>;

    /// Whether this process runs the cluster (it shuts it down), rather than being one of
    /// its workers.
    fn runs_the_cluster(&self) -> bool;
}

/// The nodes of a cluster that spans processes (`node/`), as its handles see them.
pub(crate) trait Nodes<M>: Send + Sync {
    /// Spawns a worker of `kind` on the node `node` (another than this one).
    fn spawn_on<'a>(
        &'a self,
        node: &'a NodeId,
        kind: WorkerKind,
        path: &'a str,
        props: Props,
        entry: &'a str,
    ) -> Spawning<'a, M>;
    /// The node that `placement` names, this one included.
    fn place(&self, placement: &Placement, shared: &Shared<M>) -> Result<NodeId>;
    /// This node, once it has joined.
    fn me(&self) -> Option<NodeId>;
    /// Every node this one knows, itself included, in order.
    fn members(&self) -> Vec<NodeId>;
    /// Waits until this node has joined: this node, or why it could not.
    fn joined(&self) -> Pin<Box<dyn Future<Output = Result<NodeId>> + Send + '_>>;
    /// Leaves the cluster: tells the others, gives the record back.
    fn leave(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

/// What every handle of one cluster shares.
pub(crate) struct Shared<M> {
    pub(crate) scope: Scope,
    pub(crate) entries: HashMap<String, EntryFn<M>>,
    pub(crate) mailbox: usize,
    pub(crate) runtime: tokio::runtime::Handle,
    /// In the process that runs the cluster: every worker. In a process worker: a copy
    /// kept by the events the parent sends, whose workers are reached through the parent.
    pub(crate) registry: Mutex<Registry<M>>,
    pub(crate) spawner: Arc<dyn Spawner<M>>,
    /// In a node of a cluster that spans processes: the nodes.
    pub(crate) nodes: Option<Arc<dyn Nodes<M>>>,
    /// The arguments a child process is started with.
    pub(crate) child_args: Vec<OsString>,
}

impl<M: Message> Shared<M> {
    /// The entry registered as `entry`, for a worker at `path`.
    pub(crate) fn check_entry(&self, path: &str, entry: &str) -> Result<&EntryFn<M>> {
        self.entries.get(entry).ok_or_else(|| {
            let mut known: Vec<&str> = self.entries.keys().map(String::as_str).collect();
            known.sort_unstable();
            let message = format!("no entry is registered as {entry:?} (registered: {})", known.join(", "));
            Error::new(ErrorKind::UnknownEntry, message).with_path(path)
        })
    }

    /// The live worker at `path` whose id is `id`.
    pub(crate) fn find(&self, path: &str, id: u64) -> Option<Arc<Cell<M>>> {
        self.registry.lock().get(path).filter(|cell| cell.id == id).cloned()
    }

    /// [`ended`](Shared::ended), once the claim of the worker's path is back in the store
    /// (in a cluster of nodes): a worker seen `Down` has its path free everywhere.
    pub(crate) async fn end(&self, cell: &Arc<Cell<M>>, reason: Reason) {
        cell.release_claim().await;
        self.ended(cell, reason);
    }

    /// Records that a worker of any kind has ended, once its locks are free: closes its
    /// intake, unregisters it, publishes its `Down`, then wakes whoever waits for its end.
    pub(crate) fn ended(&self, cell: &Arc<Cell<M>>, reason: Reason) {
        cell.set_reason(reason.clone());
        self.registry.lock().remove(cell, &reason);
        cell.done.fire();
    }
}
