//! Nodes: a cluster spread over processes that join through a distributed scope (etcd,
//! PostgreSQL, Redis) and talk to each other over TCP.
//!
//! The store keeps membership and nothing else (`membership.rs`): each node holds its
//! record, whose fencing token is its incarnation, and a lock per worker path. A node
//! that joins takes the join lock, its record, lists the members and connects to each
//! (`handshake.rs` proves that both know the cluster's secret). Over each link
//! (`peer.rs`) the two nodes tell each other of their own workers (`Up`, `Down`) and
//! carry messages, asks and stops, with the frames and flow control of process workers.
//!
//! A node learns that another is gone when the store gives it the other's record (its
//! session ended: it died, or was cut off from the store past its TTL), or when their link
//! breaks: the other's workers go `Down(NodeLost)` here, and references to them fail at
//! once. A node that loses its own record has been expelled: it drops its links, kills its
//! workers (their paths' claims are gone with its session) and joins again, with a new
//! incarnation, never as the old one.

mod frames;
mod handshake;
mod membership;
mod peer;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use latchkey::Guard;
use parking_lot::Mutex;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::AbortHandle;

use crate::entry::Start;
use crate::link::{Link, Reader};
use crate::local::{self, Local};
use crate::shared::{Nodes, Registered, Shared, SpawnOf, Spawner, Spawning};
use crate::signal::Signal;
use crate::spawns::Spawns;
use crate::wire::WorkerKind;
use crate::{Error, ErrorKind, Message, NodeId, Placement, Props, Reason, Result};
use handshake::{handshake, Me};
use membership::Membership;

/// The first pause before a failed join is tried again; it doubles up to [`RETRY_MOST`].
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MOST: Duration = Duration::from_secs(2);

/// How long a connection to another node may take.
const CONNECT_TIME: Duration = Duration::from_secs(5);

/// What a node is told by its builder.
pub(crate) struct NodeConfig {
    /// The store's URL: a distributed scope.
    pub(crate) url: String,
    pub(crate) cluster: String,
    /// The address to listen on, which other nodes connect to.
    pub(crate) listen: String,
    pub(crate) secret: Vec<u8>,
    /// The cluster's lock scope, if it is the store's: the node's record shares its
    /// session, so that a worker's locks and its node's membership end together.
    pub(crate) store: Option<latchkey::Scope>,
}

/// Where joining stands.
#[derive(Clone, Debug)]
enum Joined {
    Not,
    Yes(NodeId),
    /// Its first join failed (it tries again): waiting for it fails with this.
    Failed(String),
    /// It was a member, and fails to join again for now: waiting for it waits.
    Retrying,
}

/// A node of a cluster.
pub(crate) struct Node<M> {
    config: NodeConfig,
    started_ms: u64,
    joined: watch::Sender<Joined>,
    membership: OnceLock<Arc<Membership>>,
    state: Mutex<State<M>>,
    leaving: Signal,
    /// The next turn of [`Placement::RoundRobin`].
    turn: std::sync::atomic::AtomicUsize,
}

struct State<M> {
    /// This node, once registered.
    me: Option<NodeId>,
    /// The other nodes this one has a link to, by address.
    peers: HashMap<String, Peer<M>>,
    /// This node's record in the store.
    record: Option<Guard<'static>>,
}

struct Peer<M> {
    node: NodeId,
    link: Arc<Link<M>>,
    /// This node's spawns on it that await its answer.
    spawns: Arc<Spawns<M>>,
    /// Its reader and the watch of its record.
    tasks: Vec<AbortHandle>,
}

impl<M: Message> Node<M> {
    pub(crate) fn new(config: NodeConfig) -> Arc<Node<M>> {
        let started_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        Arc::new(Node {
            config,
            started_ms,
            joined: watch::Sender::new(Joined::Not),
            membership: OnceLock::new(),
            state: Mutex::new(State { me: None, peers: HashMap::new(), record: None }),
            leaving: Signal::default(),
            turn: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    /// Starts joining; runs until the node leaves.
    pub(crate) fn start(self: &Arc<Self>, shared: Arc<Shared<M>>) {
        let (node, runtime) = (self.clone(), shared.runtime.clone());
        runtime.spawn(async move {
            if let Err(err) = node.clone().serve(shared).await {
                tracing::warn!("latchkey-cluster: the node could not join the cluster: {err}");
                node.joined.send_replace(Joined::Failed(err.to_string()));
            }
        });
    }

    async fn serve(self: Arc<Self>, shared: Arc<Shared<M>>) -> Result<()> {
        let NodeConfig { url, cluster, listen, .. } = &self.config;
        let membership = Arc::new(match &self.config.store {
            Some(store) => Membership::over(store.clone(), cluster),
            None => Membership::open(url, cluster).await?,
        });
        let listener =
            TcpListener::bind(listen).await.map_err(|e| node_error(format!("cannot listen on {listen}: {e}")))?;
        let addr = listener.local_addr().map_err(|e| node_error(format!("no address to listen on: {e}")))?;
        if addr.ip().is_unspecified() {
            return Err(node_error(format!("listen on the address other nodes reach, not {addr}")));
        }
        let _ = self.membership.set(membership.clone());
        let accepting = tokio::spawn(self.clone().accept(shared.clone(), listener));
        // Joins, and joins again after an expulsion, until the node leaves; a join that
        // fails (the store is unreachable) is tried again, its error shown meanwhile.
        let (mut pause, addr) = (RETRY_FIRST, addr.to_string());
        while !self.leaving.is_fired() {
            let joined = tokio::select! {
                joined = self.join(&shared, &membership, &addr) => joined,
                () = self.leaving.wait() => break,
            };
            let record = match joined {
                Ok(record) => record,
                Err(err) => {
                    tracing::warn!("latchkey-cluster: the node could not join, and tries again: {err}");
                    let was_member = self.state.lock().me.is_some();
                    let why = err.to_string();
                    self.joined.send_replace(if was_member { Joined::Retrying } else { Joined::Failed(why) });
                    tokio::select! {
                        () = tokio::time::sleep(pause) => {}
                        () = self.leaving.wait() => break,
                    }
                    pause = (pause * 2).min(RETRY_MOST);
                    continue;
                }
            };
            pause = RETRY_FIRST;
            if self.leaving.is_fired() {
                // Shut down while it joined: leave at once.
                let _ = record.release_async().await;
                break;
            }
            let lost = record.lost();
            self.state.lock().record = Some(record);
            tokio::select! {
                () = lost => self.expel(&shared),
                () = self.leaving.wait() => break,
            }
        }
        accepting.abort();
        Ok(())
    }

    /// Registers this node and connects to every member; its record.
    async fn join(
        self: &Arc<Self>,
        shared: &Arc<Shared<M>>,
        membership: &Membership,
        addr: &str,
    ) -> Result<Guard<'static>> {
        let joining = membership.joining().await?;
        let record = membership.register(addr).await?;
        let me = NodeId { addr: addr.to_owned(), incarnation: record.fencing_token() };
        self.state.lock().me = Some(me.clone());
        for member in membership.members().await? {
            if member != addr {
                if let Err(why) = self.connect(shared, &member).await {
                    // Its record outlives it for a TTL: its watch ends it here.
                    tracing::warn!("latchkey-cluster: node {me} cannot reach the member {member}: {why}");
                }
            }
        }
        let _ = joining.release_async().await;
        tracing::info!("latchkey-cluster: node {me} joined the cluster {:?}", self.config.cluster);
        self.joined.send_replace(Joined::Yes(me));
        Ok(record)
    }

    fn me(&self) -> Option<NodeId> {
        self.state.lock().me.clone()
    }

    async fn connect(self: &Arc<Self>, shared: &Arc<Shared<M>>, addr: &str) -> std::result::Result<(), String> {
        let connecting = tokio::time::timeout(CONNECT_TIME, TcpStream::connect(addr));
        let mut stream = match connecting.await {
            Ok(connected) => connected.map_err(|e| format!("cannot connect: {e}"))?,
            Err(_) => return Err(format!("no connection within {CONNECT_TIME:?}")),
        };
        let _ = stream.set_nodelay(true);
        let me = self.me().ok_or("not registered")?;
        let peer = handshake(&mut stream, &self.identity(&me), true).await?;
        if peer.node.addr != addr {
            return Err(format!("it says it is the node at {}", peer.node.addr));
        }
        self.add_peer(shared, peer, stream);
        Ok(())
    }

    fn identity<'a>(&'a self, me: &'a NodeId) -> Me<'a> {
        Me { cluster: &self.config.cluster, node: me, started_ms: self.started_ms, secret: &self.config.secret }
    }

    async fn accept(self: Arc<Self>, shared: Arc<Shared<M>>, listener: TcpListener) {
        loop {
            let (mut stream, from) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors, say: no busy loop.
                    tracing::warn!("latchkey-cluster: cannot accept a connection: {e}");
                    tokio::time::sleep(RETRY_FIRST).await;
                    continue;
                }
            };
            let (node, shared) = (self.clone(), shared.clone());
            tokio::spawn(async move {
                let _ = stream.set_nodelay(true);
                let Some(me) = node.me() else {
                    return tracing::warn!("latchkey-cluster: refused a connection from {from}: not registered yet");
                };
                match handshake(&mut stream, &node.identity(&me), false).await {
                    Ok(peer) => node.add_peer(&shared, peer, stream),
                    Err(why) => tracing::warn!("latchkey-cluster: node {me} refused a connection from {from}: {why}"),
                }
            });
        }
    }

    /// Starts using a link to `node`, unless one to it (or to a later incarnation) exists.
    fn add_peer(self: &Arc<Self>, shared: &Arc<Shared<M>>, peer: handshake::Peer, stream: TcpStream) {
        let (node, started_ms) = (peer.node, peer.started_ms);
        let older = {
            let state = self.state.lock();
            match state.peers.get(&node.addr) {
                // A link to it lives: this one is a duplicate (or from an older incarnation).
                Some(known) if known.node.incarnation >= node.incarnation && !known.link.is_closed() => return,
                Some(known) => Some(known.node.clone()),
                None => None,
            }
        };
        if let Some(older) = older {
            self.lose(shared, &older, "a later incarnation joined, or its link had broken");
        }
        let (link, read) = Link::tcp(peer::tongue(), stream, shared.mailbox);
        let spawns = Arc::new(Spawns::new());
        let peer = Peer { node: node.clone(), link: link.clone(), spawns: spawns.clone(), tasks: vec![] };
        self.state.lock().peers.insert(node.addr.clone(), peer);
        shared.registry.lock().subscribe_link(link.clone(), peer::event_frame, true);
        let reader = {
            let (me, shared, link, node) = (self.clone(), shared.clone(), link.clone(), node.clone());
            tokio::spawn(async move {
                let why = peer::read(shared.clone(), link, spawns, Reader::new(read)).await;
                // Both may still be members: the link is made again (this task ends in `lose`).
                tokio::spawn(me.clone().reconnect(shared.clone(), node.clone()));
                me.lose(&shared, &node, &why);
            })
        };
        let watch = {
            let (me, shared, node) = (self.clone(), shared.clone(), node.clone());
            let membership = self.membership.get().cloned().expect("set before any link");
            tokio::spawn(async move {
                if membership.gone(&node.addr).await.is_ok() {
                    me.lose(&shared, &node, "its record in the store is gone");
                }
            })
        };
        if let Some(peer) = self.state.lock().peers.get_mut(&node.addr).filter(|peer| peer.node == node) {
            peer.tasks = vec![reader.abort_handle(), watch.abort_handle()];
        }
        tracing::info!("latchkey-cluster: linked to node {node} (started at {started_ms} ms after the epoch)");
    }

    /// The node `node` is gone (or unreachable): its workers go down here.
    fn lose(&self, shared: &Arc<Shared<M>>, node: &NodeId, why: &str) {
        let peer = {
            let mut state = self.state.lock();
            match state.peers.get(&node.addr) {
                Some(peer) if peer.node == *node => state.peers.remove(&node.addr),
                _ => None,
            }
        };
        let Some(peer) = peer else { return };
        tracing::info!("latchkey-cluster: lost node {node}: {why}");
        peer.link.close();
        peer.spawns.close();
        let workers = shared.registry.lock().behind(&peer.link);
        for cell in workers {
            shared.ended(&cell, Reason::NodeLost);
        }
        peer.tasks.iter().for_each(AbortHandle::abort);
    }

    /// Makes the link to `node` again after it broke, for as long as both are members and
    /// neither has made it: the node whose address sorts first dials (so that two nodes
    /// do not cross their links), the other waits for it.
    async fn reconnect(self: Arc<Self>, shared: Arc<Shared<M>>, node: NodeId) {
        let (Some(me), Some(membership)) = (self.me(), self.membership.get().cloned()) else { return };
        if me.addr > node.addr {
            return;
        }
        let mut pause = RETRY_FIRST;
        loop {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(RETRY_MOST);
            let linked = self.state.lock().peers.get(&node.addr).is_some_and(|peer| !peer.link.is_closed());
            if self.leaving.is_fired() || self.me() != Some(me.clone()) || linked {
                return;
            }
            match membership.members().await {
                Ok(members) if !members.contains(&node.addr) => return,
                Ok(_) => {}
                Err(_) => continue,
            }
            match self.connect(&shared, &node.addr).await {
                Ok(()) => return tracing::info!("latchkey-cluster: node {me} linked to {node} again"),
                Err(why) => tracing::warn!("latchkey-cluster: node {me} cannot link to {node} again yet: {why}"),
            }
        }
    }

    /// This node lost its record: the others have taken it for gone.
    fn expel(&self, shared: &Arc<Shared<M>>) {
        let me = self.me();
        tracing::warn!("latchkey-cluster: node {me:?} lost its record in the store: it joins again");
        self.joined.send_replace(Joined::Not);
        let peers: Vec<NodeId> = self.state.lock().peers.values().map(|peer| peer.node.clone()).collect();
        for peer in peers {
            self.lose(shared, &peer, "this node was expelled");
        }
        let ours = shared.registry.lock().ours();
        for cell in ours {
            cell.request_kill();
        }
    }

    /// The store, once this node has joined (or why it could not).
    async fn joined_store(&self) -> Result<(NodeId, Arc<Membership>)> {
        let mut joined = self.joined.subscribe();
        loop {
            match joined.borrow_and_update().clone() {
                Joined::Yes(me) => return Ok((me, self.membership.get().cloned().expect("set before joining"))),
                Joined::Failed(why) => return Err(node_error(why)),
                Joined::Not | Joined::Retrying => {}
            }
            if joined.changed().await.is_err() {
                return Err(node_error("the node has stopped".to_owned()));
            }
        }
    }

    /// Claims `path` in the store; a path that ends in `/` is numbered by the store, so
    /// that no two nodes give out the same number, even after its worker ended.
    async fn claim(&self, shared: &Shared<M>, path: &str) -> Result<(String, Guard<'static>)> {
        let (_, membership) = self.joined_store().await?;
        let numbered = path.ends_with('/');
        loop {
            let candidate = match numbered {
                true => {
                    shared.registry.lock().check_prefix(path)?;
                    format!("{path}{}", membership.number().await?)
                }
                false => path.to_owned(),
            };
            let candidate = match shared.registry.lock().claim(&candidate) {
                Ok(claimed) => claimed.as_str().to_owned(),
                Err(taken) if numbered && taken.kind() == ErrorKind::DuplicatePath => continue,
                Err(e) => return Err(e),
            };
            match membership.claim(&candidate).await? {
                Some(claim) => return Ok((candidate, claim)),
                None if numbered => continue,
                None => {
                    let message = format!("a live worker of another node already has the path {candidate}");
                    return Err(Error::new(ErrorKind::DuplicatePath, message).with_path(path));
                }
            }
        }
    }
}

fn node_error(message: String) -> Error {
    Error::new(ErrorKind::Node, message)
}

impl<M: Message> Nodes<M> for Node<M> {
    fn spawn_on<'a>(
        &'a self,
        node: &'a NodeId,
        kind: WorkerKind,
        path: &'a str,
        props: Props,
        entry: &'a str,
    ) -> Spawning<'a, M> {
        Box::pin(async move {
            let peer = {
                let state = self.state.lock();
                state
                    .peers
                    .get(&node.addr)
                    .filter(|peer| peer.node == *node)
                    .map(|peer| (peer.link.clone(), peer.spawns.clone()))
            };
            let Some((link, spawns)) = peer else {
                let message = format!("the node {node} is not a member of the cluster");
                return Err(Error::new(ErrorKind::Node, message).with_path(path));
            };
            spawns.request(&link, peer::spawn_frame, kind, path, props, entry).await
        })
    }

    fn place(&self, placement: &Placement, shared: &Shared<M>) -> Result<NodeId> {
        let me = Nodes::<M>::me(self).ok_or_else(|| node_error("this node has not joined its cluster".to_owned()))?;
        let members = Nodes::<M>::members(self);
        Ok(match placement {
            Placement::Here => me,
            Placement::On(node) => node.clone(),
            Placement::RoundRobin => {
                let turn = self.turn.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                members[turn % members.len()].clone()
            }
            Placement::LeastWorkers => {
                let registry = shared.registry.lock();
                let links: HashMap<String, Arc<Link<M>>> =
                    self.state.lock().peers.values().map(|peer| (peer.node.addr.clone(), peer.link.clone())).collect();
                let count = |node: &NodeId| match links.get(&node.addr) {
                    _ if *node == me => registry.ours().len(),
                    Some(link) => registry.behind(link).len(),
                    None => usize::MAX,
                };
                members.iter().min_by_key(|node| count(node)).cloned().unwrap_or(me.clone())
            }
        })
    }

    fn me(&self) -> Option<NodeId> {
        match &*self.joined.borrow() {
            Joined::Yes(me) => Some(me.clone()),
            _ => None,
        }
    }

    fn members(&self) -> Vec<NodeId> {
        let state = self.state.lock();
        let mut members: Vec<NodeId> = state.peers.values().map(|peer| peer.node.clone()).collect();
        members.extend(Nodes::<M>::me(self));
        members.sort();
        members
    }

    fn joined(&self) -> Pin<Box<dyn Future<Output = Result<NodeId>> + Send + '_>> {
        Box::pin(async move { self.joined_store().await.map(|(me, _)| me) })
    }

    fn leave(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            self.leaving.fire();
            let (peers, record) = {
                let mut state = self.state.lock();
                (std::mem::take(&mut state.peers), state.record.take())
            };
            // The record first: the store gives it back after the claims of the paths of
            // the workers that ended (the scope finishes what it does in the background
            // first), so a node that sees this one gone finds their paths free.
            if let Some(record) = record {
                let _ = record.release_async().await;
            }
            for peer in peers.into_values() {
                let _ = peer.link.send(&frames::ToNode::<()>::Leave);
                peer.link.flush().await;
                peer.link.close();
                peer.spawns.close();
                peer.tasks.iter().for_each(AbortHandle::abort);
            }
            self.joined.send_replace(Joined::Failed("the node has left the cluster".to_owned()));
        })
    }
}

/// The spawner of a node: workers start here, each with its path claimed in the store.
pub(crate) struct NodeSpawner<M> {
    pub(crate) node: Arc<Node<M>>,
}

impl<M: Message> Spawner<M> for NodeSpawner<M> {
    fn spawn<'a>(
        &'a self,
        shared: &'a Arc<Shared<M>>,
        spawn: SpawnOf<'a>,
        registered: Registered<M>,
    ) -> Spawning<'a, M> {
        Box::pin(async move {
            spawn.props.check_size(spawn.path)?;
            let (path, claim) = self.node.claim(shared, spawn.path).await?;
            let registered: Registered<M> = Box::new(move |cell| {
                cell.keep_claim(claim);
                registered(cell)
            });
            Local.spawn(shared, SpawnOf { path: &path, ..spawn }, registered).await
        })
    }

    fn spawn_fn<'a>(
        &'a self,
        shared: &'a Arc<Shared<M>>,
        path: &'a str,
        props: Props,
        start: Start<M>,
    ) -> Spawning<'a, M> {
        Box::pin(async move {
            props.check_size(path)?;
            let (path, claim) = self.node.claim(shared, path).await?;
            local::start_task(shared, &path, props, start, Box::new(move |cell| cell.keep_claim(claim)))
        })
    }

    fn runs_the_cluster(&self) -> bool {
        true
    }
}
