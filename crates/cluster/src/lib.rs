//! Clusters of isolated workers that message each other, addressed by path.
//!
//! A [`Cluster`] runs workers spawned at a [`Path`] (`/receivers/1`) from an entry point
//! registered by name, with [`Props`]. A [`WorkerRef`] (from a spawn, a
//! [`lookup`](Cluster::lookup) or a [`Group`]) sends messages or asks and awaits a reply;
//! inside, a worker's [`Context`] receives [`Envelope`]s with their sender, subscribes to
//! membership [`Event`]s, and takes named locks in the cluster's [`latchkey::Scope`],
//! which it loses when it ends, however it ends. [`Cluster::shutdown`] stops intake,
//! drains, and reports which workers had to be killed.
//!
//! Workers are tasks of this process ([`Cluster::spawn`]) or child processes of this
//! same executable ([`Cluster::spawn_process`]); both look the same through a
//! [`WorkerRef`] and a [`Context`]. A program with process workers calls
//! [`child_main`] first thing in `main`: in a child, that runs the worker and exits. A
//! process worker spawns through its parent: the new worker is a task of the parent or
//! another child process of it, never a child of the child.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> latchkey_cluster::Result<()> {
//! use std::time::Duration;
//! use latchkey_cluster::{Cluster, Context, Event, Props};
//!
//! type BoxError = Box<dyn std::error::Error + Send + Sync>;
//!
//! async fn receiver(mut ctx: Context<String>) -> Result<(), BoxError> {
//!     while let Some(envelope) = ctx.recv().await {
//!         let _printer = ctx.scope().lock("printer").await?; // released at the end of the loop body
//!         println!("{} got {:?} from {:?}", ctx.path(), envelope.message(), envelope.sender());
//!     }
//!     Ok(()) // asked to stop, and the mailbox is drained
//! }
//!
//! async fn sender(ctx: Context<String>) -> Result<(), BoxError> {
//!     let mut events = ctx.events(); // first the current members, then changes
//!     while let Some(event) = events.next().await {
//!         if let Event::Up(worker) = event {
//!             if worker.props().get("type") == Some("receiver") {
//!                 worker.send(format!("hello from {}", ctx.path())).await?;
//!                 break;
//!             }
//!         }
//!     }
//!     Ok(())
//! }
//!
//! let cluster = Cluster::builder()
//!     .scope(latchkey::Scope::isolated()) // default: the host: scope
//!     .entry("receiver", receiver)
//!     .entry("sender", sender)
//!     .build()?;
//! cluster.spawn("/senders/", Props::from([("id", "1")]), "sender").await?;
//! cluster.spawn("/receiver", Props::from([("type", "receiver")]), "receiver").await?;
//! let report = cluster.shutdown(Duration::from_secs(5)).await;
//! assert!(report.forced.is_empty());
//! # Ok(())
//! # }
//! ```
//!
//! # Architecture
//! - **Roles** (`shared.rs`, `local.rs`, `parent.rs`, `child.rs`): a cluster handle does
//!   not know which kind of process it is in. It spawns through the cluster's spawner,
//!   the one interface a spawn goes through: in the process that runs the cluster
//!   (`local.rs`) the spawner starts a task or a child process; inside a process worker
//!   (`child.rs`) it asks the parent, whose supervisor of that child (`parent.rs`) serves
//!   the request with its own spawner. The roles share the wire format (`wire.rs`,
//!   `link.rs`) and the registry, and no role module imports another.
//! - **Nodes** (`node/`): a cluster can span processes and machines
//!   ([`Builder::join`]): nodes keep their membership in a distributed scope (a record per
//!   node, whose fencing token is its incarnation, and a claim per worker path, all locks
//!   of the scope), link to each other over TCP after proving that they share the
//!   cluster's secret, and tell each other of their own workers; a worker on another node
//!   is a link and a route like a process worker's. A node that dies or is cut off from
//!   the store goes `Down(`[`Reason::NodeLost`]`)` on the others within the store's lease;
//!   [`Cluster::spawn_on`] starts a worker on a node a [`Placement`] picks.
//! - **Registry** (`registry.rs`): live workers in a map ordered by path, behind one
//!   lock, so a prefix lookup is a range scan and no lookup ever waits on a worker. A
//!   path ending in `/` gets a last segment from a counter of the cluster (in a cluster
//!   of nodes, the fencing token of a grant of the store's `numbers` semaphore, so that no two
//!   nodes give the same number); a path that a live worker holds is refused.
//! - **Workers** (`cell.rs`, `worker.rs`, `task.rs`): each worker has a record shared by
//!   its references: id, path, properties, mailbox sender, and three one-shot signals
//!   (stop requested, kill, done) plus how it ended. A task worker is one Tokio task that polls
//!   the entry's future, catches panics, and drops the future the moment `kill` fires;
//!   only then does it unregister and publish `Down`, so a `Down` means the locks are free.
//!   A kill also closes intake, but fires first, so that a killed worker's `recv` never
//!   ends as if it had been stopped gracefully.
//! - **Mailbox**: a bounded channel per task worker (process workers: see below).
//!   `send` waits for room, `try_send` fails with [`ErrorKind::Full`]. One channel per
//!   receiver keeps each sender's messages in order. Inside a process worker, every
//!   other worker is reached through the parent, and `Full` means that this child's
//!   window of sends to that receiver waiting in the parent is full, not the receiver's
//!   mailbox (see **Wire**): a `try_send` that succeeds may still wait in the parent for
//!   room. An
//!   ask carries a one-shot reply channel; dropping it unanswered fails the ask at once.
//!   Messages between tasks are moved, not serialized.
//! - **Membership** (`event.rs`): every `Up` and `Down` is published to all subscribers
//!   under the registry lock, and a new subscriber gets its snapshot of `Up`s under that
//!   lock too: no gap, no duplicate, one order for all. [`Group`]s apply these events
//!   lazily before each send.
//! - **Shutdown** (`shutdown.rs`): close the registry to new workers, fire every
//!   worker's stop signal (sends fail with [`ErrorKind::Closed`]; `recv` drains what is
//!   queued, then returns `None`), wait until the deadline, kill the rest, wait for every
//!   `Down`, then end the subscriptions.
//!
//! - **Process workers** (`parent.rs` in the parent, `child.rs` in the child): the child
//!   is this executable run with [`Builder::child_args`], its end of a Unix socketpair
//!   passed as an fd number in the `LATCHKEY_CLUSTER_CHILD` variable with the parent's
//!   pid. [`child_main`] finds the variable, asks for SIGKILL when the parent dies
//!   (`PR_SET_PDEATHSIG`, also set before exec) and checks that the parent is still
//!   there, reads the first frame (entry, path, properties, id, scope URL, mailbox
//!   size), opens the scope, and runs the entry on a runtime of its own with the same
//!   `Context`. In the parent, a supervisor task per child reads its frames, sends
//!   a `Stop` frame on a stop and SIGKILL on a kill, and learns
//!   of the child's end from its pidfd (no polling): it then takes the frames left in
//!   the socket, reaps the child, maps the end to a [`Reason`] (the child's last frame
//!   says `Ok` or the error; death by a signal is `Killed`) and calls the same end step
//!   as a task. Children are forked by one long-lived thread (`sys.rs`, the only door to
//!   the system calls), since the parent-death signal follows the forking thread.
//! - **Wire** (`wire.rs`, `link.rs`): frames are a `u32` length and a
//!   [postcard](https://docs.rs/postcard) body; messages between processes are
//!   encoded, messages inside one are not. Each way is flow controlled by credits, per
//!   receiver: the parent may have at most a mailbox's worth of messages not yet
//!   received by the child's worker (so a process mailbox is bounded like a task's:
//!   `send` waits, `try_send` fails with [`ErrorKind::Full`]), and a child (or another
//!   node) at most as many sends to each receiver not yet placed in its mailbox. The
//!   receiving end places them in order per receiver (`forward.rs`): a receiver that
//!   stops taking messages holds up only its own. Replies, events, credits and spawns
//!   are not counted, so no reader ever waits. An ask carries an id; its reply handle in the child is a
//!   frame back.
//! - **The parent is the hub**: the registry queues an event frame for each child
//!   under its lock, so a child learns of a worker before any message sent after its
//!   spawn; the child keeps a copy of the registry from them, so its lookups answer at
//!   once; a reference found there sends through the parent, whose forwarder task per
//!   child places the messages in order. Workers on other nodes will be one more
//!   mailbox variant.
//! - **Spawns from a child** (`spawns.rs`, `parent.rs`): a child's `spawn` and `spawn_process` send a
//!   `Spawn` frame (request id, path, properties, entry, task or process) and wait; the
//!   parent spawns with its own cluster, so the checks, the numbering of a path that
//!   ends in `/` and the errors are the parent's, and answers with a `Spawned` frame:
//!   the new worker's id, final path, properties and pid, or the error's kind and
//!   message. A success is answered under the registry lock, right after the worker's
//!   `Up` was queued for every child: the child has applied the `Up` when its spawn
//!   returns, so the reference is the one a lookup finds and takes messages at once,
//!   and no `Down` of the worker can come first. The spawns of a child whose link to
//!   the parent breaks fail at once with [`ErrorKind::Closed`]. A closure cannot cross
//!   processes: `spawn_fn` in a child fails with [`ErrorKind::Unsupported`].

mod builder;
mod cell;
mod child;
mod cluster;
mod context;
mod entry;
mod error;
mod event;
mod forward;
mod group;
mod link;
mod local;
mod message;
mod node;
mod node_id;
mod parent;
mod path;
mod props;
mod reason;
mod registry;
mod shared;
mod shutdown;
mod signal;
mod spawns;
mod sys;
mod task;
mod wire;
mod worker;

pub use builder::{Builder, DEFAULT_MAILBOX_CAPACITY};
pub use child::child_main;
pub use cluster::Cluster;
pub use context::Context;
pub use error::{Error, ErrorKind, Result};
pub use event::{Event, Events};
pub use group::Group;
pub use message::{Envelope, Message, Reply};
pub use node_id::{NodeId, Placement};
pub use path::{Path, MAX_PATH_LEN};
pub use props::{Props, MAX_PROPS_BYTES};
pub use reason::Reason;
pub use shutdown::ShutdownReport;
pub use worker::WorkerRef;
