//! The cluster handle: spawn workers, find them, subscribe to membership.

use std::fmt;
use std::sync::Arc;

use latchkey::Scope;

use crate::cell::Cell;
use crate::shared::{Shared, SpawnOf};
use crate::wire::WorkerKind;
use crate::{Events, Group, Message, NodeId, Placement, Props, Result, WorkerRef};

/// A cluster of workers that message each other, addressed by [`Path`](crate::Path). A
/// cheap handle to clone and share.
///
/// Workers are spawned from an entry point registered by name with
/// [`Builder::entry`](crate::Builder::entry) (or, for task workers only, from a closure with
/// [`spawn_fn`](Cluster::spawn_fn)). Each gets a [`Context`](crate::Context) with its path, properties,
/// mailbox and membership events, and the cluster's lock [`scope`](Cluster::scope).
///
/// Dropping the handles does not stop the workers: [`shutdown`](Cluster::shutdown) does
/// (and the end of this process ends its process workers).
///
/// # Examples
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> latchkey_cluster::Result<()> {
/// use std::time::Duration;
/// use latchkey_cluster::{Cluster, Context, Props};
///
/// async fn greeter(mut ctx: Context<String>) -> Result<(), String> {
///     let greeting = ctx.props().get("greeting").unwrap_or("hello").to_owned();
///     while let Some(envelope) = ctx.recv().await {
///         let name = envelope.message().clone();
///         envelope.reply(format!("{greeting}, {name}")).map_err(|e| e.to_string())?;
///     }
///     Ok(())
/// }
///
/// let cluster = Cluster::builder()
///     .scope(latchkey::Scope::isolated()) // default: the host: scope
///     .entry("greeter", greeter)
///     .build()?;
/// let worker = cluster.spawn("/greeters/", Props::from([("greeting", "hi")]), "greeter").await?;
/// assert_eq!(worker.path().as_str(), "/greeters/1");
/// assert_eq!(worker.ask("Ada".to_owned(), Duration::from_secs(5)).await?, "hi, Ada");
///
/// let report = cluster.shutdown(Duration::from_secs(5)).await;
/// assert_eq!(report.stopped, ["/greeters/1"]);
/// assert!(report.forced.is_empty());
/// # Ok(())
/// # }
/// ```
pub struct Cluster<M> {
    pub(crate) shared: Arc<Shared<M>>,
    /// The worker this handle acts for (`None` outside any worker).
    me: Option<crate::Path>,
}

impl<M: Message> Cluster<M> {
    pub(crate) fn new(shared: Arc<Shared<M>>) -> Self {
        Cluster { shared, me: None }
    }

    /// This cluster as seen by the worker at `path`.
    pub(crate) fn as_worker(&self, path: crate::Path) -> Self {
        Cluster { shared: self.shared.clone(), me: Some(path) }
    }

    /// The scope whose named locks the workers take.
    pub fn scope(&self) -> &Scope {
        &self.shared.scope
    }

    /// Spawns a worker at `path` from the entry registered as `entry`.
    ///
    /// A path ending in `/` (`/receivers/`) gets a last segment no worker of this cluster
    /// had (`/receivers/4`): counted by the cluster, or in a cluster of nodes by its
    /// store (increasing, not consecutive). Fails with [`InvalidPath`](crate::ErrorKind::InvalidPath),
    /// [`DuplicatePath`](crate::ErrorKind::DuplicatePath) if a live worker has the path,
    /// [`UnknownEntry`](crate::ErrorKind::UnknownEntry), or [`Closed`](crate::ErrorKind::Closed) once
    /// shutdown has begun. When it returns, the worker is registered and its `Up` event
    /// published; it runs as a task of this process.
    ///
    /// Inside a process worker, the parent spawns it, as a task of the parent, with the
    /// parent's entries: the call fails as it would there, and with
    /// [`Closed`](crate::ErrorKind::Closed) if the parent goes away first. When it returns, this
    /// process knows the worker too: the reference is the one a lookup finds, and takes
    /// messages at once. Dropping the future does not cancel a spawn the parent has begun.
    pub async fn spawn(&self, path: &str, props: impl Into<Props>, entry: &str) -> Result<WorkerRef<M>> {
        self.spawn_kind(WorkerKind::Task, path, props.into(), entry).await
    }

    /// Spawns a worker at `path` from the entry registered as `entry`, like
    /// [`spawn`](Cluster::spawn), as a child process of this executable.
    ///
    /// The child is this executable ([`current_exe`](std::env::current_exe)) run with
    /// the [`child_args`](crate::Builder::child_args), and must call [`child_main`](crate::child_main)
    /// before anything else: that runs the entry, in a process of its own. Its messages
    /// are encoded with serde; its locks are taken in the cluster's scope, which must be a
    /// `host:` scope (else [`Scope`](crate::ErrorKind::Scope)), and die with its process. It is
    /// killed with SIGKILL when killed, and when this process dies. Fails like `spawn`,
    /// and with [`Spawn`](crate::ErrorKind::Spawn) if the process cannot be started. When it
    /// returns, the worker is registered and its `Up` published; the child may still be
    /// starting, and messages wait for it in its mailbox. The runtime needs its I/O and
    /// time drivers (`enable_all`).
    ///
    /// Inside a process worker, the parent spawns it, as another child process of the
    /// parent, like [`spawn`](Cluster::spawn) does a task.
    ///
    /// # Examples
    /// ```no_run
    /// use std::time::Duration;
    /// use latchkey_cluster::{Builder, Cluster, Context, Props};
    ///
    /// async fn echo(mut ctx: Context<String>) -> Result<(), latchkey_cluster::Error> {
    ///     while let Some(envelope) = ctx.recv().await {
    ///         let message = envelope.message().clone();
    ///         envelope.reply(message)?;
    ///     }
    ///     Ok(())
    /// }
    ///
    /// fn builder() -> Builder<String> {
    ///     Cluster::builder().entry("echo", echo)
    /// }
    ///
    /// fn main() -> latchkey_cluster::Result<()> {
    ///     latchkey_cluster::child_main(builder()); // in a process worker, runs it and exits
    ///     let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    ///     runtime.block_on(async {
    ///         let cluster = builder().build()?; // the host: scope
    ///         let echo = cluster.spawn_process("/echo", Props::new(), "echo").await?;
    ///         assert_eq!(echo.ask("hi".to_owned(), Duration::from_secs(5)).await?, "hi");
    ///         cluster.shutdown(Duration::from_secs(5)).await;
    ///         Ok(())
    ///     })
    /// }
    /// ```
    pub async fn spawn_process(&self, path: &str, props: impl Into<Props>, entry: &str) -> Result<WorkerRef<M>> {
        self.spawn_kind(WorkerKind::Process, path, props.into(), entry).await
    }

    /// Spawns a worker at `path` from the entry registered as `entry`, like
    /// [`spawn`](Cluster::spawn), as a task of the node `placement` names, in a cluster of
    /// nodes ([`Builder::join`](crate::Builder::join)); it can then be reached from every
    /// node. Fails like `spawn` does there (with that node's entries), and with
    /// [`Node`](crate::ErrorKind::Node) if that node is not a member, or this cluster is
    /// not a node (where only [`Placement::Here`] works). A closure cannot cross nodes:
    /// [`spawn_fn`](Cluster::spawn_fn) spawns here only.
    pub async fn spawn_on(
        &self,
        placement: Placement,
        path: &str,
        props: impl Into<Props>,
        entry: &str,
    ) -> Result<WorkerRef<M>> {
        self.spawn_placed(WorkerKind::Task, placement, path, props.into(), entry).await
    }

    /// [`spawn_on`](Cluster::spawn_on) for a process worker of that node
    /// ([`spawn_process`](Cluster::spawn_process)).
    pub async fn spawn_process_on(
        &self,
        placement: Placement,
        path: &str,
        props: impl Into<Props>,
        entry: &str,
    ) -> Result<WorkerRef<M>> {
        self.spawn_placed(WorkerKind::Process, placement, path, props.into(), entry).await
    }

    async fn spawn_placed(
        &self,
        kind: WorkerKind,
        placement: Placement,
        path: &str,
        props: Props,
        entry: &str,
    ) -> Result<WorkerRef<M>> {
        let Some(nodes) = &self.shared.nodes else {
            if placement == Placement::Here {
                return self.spawn_kind(kind, path, props, entry).await;
            }
            return Err(
                crate::Error::new(crate::ErrorKind::Node, "this cluster is not a node (Builder::join)").with_path(path)
            );
        };
        let me = nodes.joined().await?;
        let target = nodes.place(&placement, &self.shared)?;
        if target == me {
            return self.spawn_kind(kind, path, props, entry).await;
        }
        let cell = nodes.spawn_on(&target, kind, path, props, entry).await?;
        Ok(self.reference(cell))
    }

    /// Spawns a worker of `kind`, with the cluster's spawner (see `shared.rs`).
    async fn spawn_kind(&self, kind: WorkerKind, path: &str, props: Props, entry: &str) -> Result<WorkerRef<M>> {
        let spawn = SpawnOf { kind, path, props, entry };
        let cell = self.shared.spawner.spawn(&self.shared, spawn, Box::new(|_| {})).await?;
        Ok(self.reference(cell))
    }

    /// The live worker at `path`, if any; answers at once (an invalid path has no worker).
    pub fn lookup(&self, path: &str) -> Option<WorkerRef<M>> {
        let cell = self.shared.registry.lock().get(path).cloned();
        cell.map(|cell| self.reference(cell))
    }

    /// Every live worker strictly below `prefix`, in path order: `/receivers` and
    /// `/receivers/` both give `/receivers/1` and `/receivers/a/b`, and `/` gives all.
    pub fn lookup_prefix(&self, prefix: &str) -> Vec<WorkerRef<M>> {
        let registry = self.shared.registry.lock();
        registry.under(prefix).map(|cell| self.reference(cell.clone())).collect()
    }

    /// A subscription to membership events: `Up` for every live worker, then every
    /// change. See [`Events`].
    pub fn events(&self) -> Events<M> {
        self.shared.registry.lock().subscribe(self.me.clone())
    }

    /// The workers strictly below `prefix`, kept current by membership events, for
    /// round-robin and broadcast sends.
    pub fn group(&self, prefix: &str) -> Group<M> {
        Group::new(prefix, self.events())
    }

    /// This node of a cluster that spans processes, once it has joined
    /// ([`Builder::join`](crate::Builder::join)); `None` otherwise.
    pub fn node(&self) -> Option<NodeId> {
        self.shared.nodes.as_ref().and_then(|nodes| nodes.me())
    }

    /// The nodes this one knows, itself included, in order; empty if it is not a node.
    pub fn nodes(&self) -> Vec<NodeId> {
        self.shared.nodes.as_ref().map_or_else(Vec::new, |nodes| nodes.members())
    }

    /// Waits until this node has joined its cluster; fails with
    /// [`Node`](crate::ErrorKind::Node) if it cannot (or is not a node).
    pub async fn joined(&self) -> Result<NodeId> {
        match &self.shared.nodes {
            Some(nodes) => nodes.joined().await,
            None => Err(crate::Error::new(crate::ErrorKind::Node, "this cluster is not a node (Builder::join)")),
        }
    }

    /// A reference to `cell` that sends as the worker this handle acts for.
    pub(crate) fn reference(&self, cell: Arc<Cell<M>>) -> WorkerRef<M> {
        WorkerRef { cell, from: self.me.clone() }
    }
}

impl<M> Clone for Cluster<M> {
    fn clone(&self) -> Self {
        Cluster { shared: self.shared.clone(), me: self.me.clone() }
    }
}

impl<M> fmt::Debug for Cluster<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster").field("scope", &self.shared.scope).field("me", &self.me).finish()
    }
}
