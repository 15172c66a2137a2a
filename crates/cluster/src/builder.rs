//! Building a cluster: its lock scope, its entry points, its mailbox size.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt::{self, Display};
use std::future::Future;
use std::sync::Arc;

use latchkey::Scope;
use parking_lot::Mutex;

use crate::entry::{self, EntryFn};
use crate::local::Local;
use crate::node::{Node, NodeConfig, NodeSpawner};
use crate::registry::Registry;
use crate::shared::Shared;
use crate::{Cluster, Context, Error, ErrorKind, Message, Result};

/// How many messages a mailbox holds unless [`Builder::mailbox_capacity`] says otherwise.
pub const DEFAULT_MAILBOX_CAPACITY: usize = 1024;

/// Configures and builds a [`Cluster`]; made by [`Cluster::builder`].
pub struct Builder<M> {
    scope: Option<Scope>,
    entries: Vec<(String, EntryFn<M>)>,
    mailbox: usize,
    child_args: Vec<OsString>,
    join: Option<Join>,
}

/// How a node joins its cluster.
struct Join {
    url: String,
    cluster: String,
    listen: String,
    secret: Option<Vec<u8>>,
}

impl<M: Message> Cluster<M> {
    /// A builder for a new cluster.
    pub fn builder() -> Builder<M> {
        Builder::new()
    }
}

impl<M: Message> Builder<M> {
    fn new() -> Self {
        Builder {
            scope: None,
            entries: Vec::new(),
            mailbox: DEFAULT_MAILBOX_CAPACITY,
            child_args: Vec::new(),
            join: None,
        }
    }

    /// The scope whose named locks the workers take. Default: the `host:` scope (every
    /// process of this user on this machine), which child-process workers share with
    /// their parent.
    pub fn scope(mut self, scope: Scope) -> Self {
        self.scope = Some(scope);
        self
    }

    /// Registers an entry point: a function that runs a worker, named so that
    /// [`Cluster::spawn`] can start workers from it. An `async fn(Context<M>) -> Result<(), E>`
    /// with `E: Display` fits; an `Err` is reported as [`Reason::Failed`](crate::Reason).
    ///
    /// Names are 1 to 64 ASCII letters, digits, `-`, `_`, `.` and `:`; a bad or repeated
    /// name makes [`build`](Builder::build) fail with [`InvalidEntry`](ErrorKind::InvalidEntry).
    pub fn entry<F, Fut, E>(mut self, name: &str, f: F) -> Self
    where
        F: Fn(Context<M>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Display,
    {
        self.entries.push((name.to_owned(), entry::entry_fn(f)));
        self
    }

    /// The arguments of a process worker's command line (default: none). The child is
    /// this executable, and must reach [`child_main`](crate::child_main) first thing: a
    /// program whose `main` calls it needs none; a test binary passes the test harness
    /// the arguments that run only the test which calls it, such as
    /// `["--exact", "child", "--nocapture"]`.
    pub fn child_args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.child_args = args.into_iter().map(Into::into).collect();
        self
    }

    /// How many messages each worker's mailbox holds (default
    /// [`DEFAULT_MAILBOX_CAPACITY`]). When it is full, `send` waits and `try_send` fails.
    ///
    /// # Panics
    /// If `capacity` is 0.
    pub fn mailbox_capacity(mut self, capacity: usize) -> Self {
        assert!(capacity > 0, "a mailbox holds at least one message");
        self.mailbox = capacity;
        self
    }

    /// Makes this cluster a node of the cluster `cluster` whose members are kept in the
    /// distributed scope at `url` (`etcd://…`, `postgres://…`, `redis://…`): nodes with
    /// the same URL and cluster name form one cluster, whose workers message, ask, look
    /// up and watch each other wherever they run. Give the shared secret with
    /// [`secret`](Builder::secret) and the address to listen on with
    /// [`listen`](Builder::listen). A node joins in the background once built
    /// ([`Cluster::joined`] waits for it); spawns wait until it has.
    ///
    /// A worker's path is claimed in the store, so it is unique across the cluster; a
    /// node that dies or is cut off from the store leaves it within the store's lease
    /// (the scope's TTL): its workers go `Down(NodeLost)` everywhere else.
    pub fn join(mut self, url: &str, cluster: &str) -> Self {
        let listen = "127.0.0.1:0".to_owned();
        let secret = self.join.take().and_then(|join| join.secret);
        self.join = Some(Join { url: url.to_owned(), cluster: cluster.to_owned(), listen, secret });
        self
    }

    /// The address this node listens on for other nodes (default `127.0.0.1:0`, a free
    /// port of the loopback interface); an address the other nodes can reach, not
    /// `0.0.0.0`. Only for a node ([`join`](Builder::join)).
    pub fn listen(mut self, addr: &str) -> Self {
        if let Some(join) = &mut self.join {
            join.listen = addr.to_owned();
        }
        self
    }

    /// The secret the nodes of the cluster share: a node proves it knows it before any
    /// other frame is read from it, and refuses (and logs) a connection that does not.
    /// Required for a node ([`join`](Builder::join)).
    pub fn secret(mut self, secret: impl AsRef<[u8]>) -> Self {
        if let Some(join) = &mut self.join {
            join.secret = Some(secret.as_ref().to_vec());
        }
        self
    }

    /// Builds the cluster. Must be called within a Tokio runtime (its workers run there;
    /// it needs the time driver for timeouts). Opens the `host:` scope if none was given.
    pub fn build(self) -> Result<Cluster<M>> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|e| {
            Error::new(ErrorKind::NoRuntime, "a cluster is built within a Tokio runtime, where its workers run")
                .with_source(e)
        })?;
        let entries = validate(self.entries)?;
        let scope = match self.scope {
            Some(scope) => scope,
            None => Scope::open("host:").map_err(|e| {
                Error::new(ErrorKind::Scope, format!("cannot open the host: scope: {e}")).with_source(e)
            })?,
        };
        let registry = Mutex::new(Registry::new());
        let child_args = self.child_args;
        let Some(join) = self.join else {
            let (spawner, nodes) = (Arc::new(Local), None);
            let shared =
                Shared { scope, entries, mailbox: self.mailbox, runtime, registry, spawner, nodes, child_args };
            return Ok(Cluster::new(Arc::new(shared)));
        };
        let Some(secret) = join.secret.filter(|secret| !secret.is_empty()) else {
            return Err(Error::new(ErrorKind::Node, "a node needs the cluster's secret (Builder::secret)"));
        };
        let store = (scope.url() == join.url).then(|| scope.clone());
        let config = NodeConfig { url: join.url, cluster: join.cluster, listen: join.listen, secret, store };
        let node = Node::new(config);
        let spawner = Arc::new(NodeSpawner { node: node.clone() });
        let nodes = Some(node.clone() as Arc<dyn crate::shared::Nodes<M>>);
        let shared =
            Arc::new(Shared { scope, entries, mailbox: self.mailbox, runtime, registry, spawner, nodes, child_args });
        node.start(shared.clone());
        Ok(Cluster::new(shared))
    }

    /// The entries, checked, for a process worker.
    pub(crate) fn into_entries(self) -> Result<HashMap<String, EntryFn<M>>> {
        validate(self.entries)
    }
}

fn validate<M>(list: Vec<(String, EntryFn<M>)>) -> Result<HashMap<String, EntryFn<M>>> {
    let mut entries = HashMap::new();
    for (name, f) in list {
        entry::validate_name(&name)?;
        if entries.insert(name.clone(), f).is_some() {
            return Err(Error::new(ErrorKind::InvalidEntry, format!("the entry {name:?} is registered twice")));
        }
    }
    Ok(entries)
}

impl<M> fmt::Debug for Builder<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("scope", &self.scope)
            .field("entries", &self.entries.iter().map(|(name, _)| name).collect::<Vec<_>>())
            .field("mailbox", &self.mailbox)
            .field("child_args", &self.child_args)
            .field("join", &self.join.as_ref().map(|join| (&join.url, &join.cluster, &join.listen)))
            .finish()
    }
}
