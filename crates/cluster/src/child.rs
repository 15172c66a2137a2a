//! Process workers, seen from inside: the child side of the link.
//!
//! The child reads the [`Init`] frame, opens the cluster's scope, and runs the entry on a
//! single-threaded runtime of its own, with the same [`Context`] as a task worker. A
//! reader task puts the parent's messages in the worker's mailbox (never more than the
//! credits allow, so it never waits), hands answers to the worker's asks, and keeps a
//! copy of the registry from the membership events: lookups answer at once, and the
//! workers found there are reached through the parent, which also spawns for the child
//! (its spawner, [`ViaParent`], sends the requests of `spawns.rs`). When the entry
//! ends, the child sends how it ended in its last frame and exits. (`parent.rs` is the
//! other end of the link.)

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;

use crate::cell::{Cell, Control, Route};
use crate::entry::{EntryFn, Start};
use crate::link::{Link, Reader, Tongue};
use crate::registry::Registry;
use crate::shared::{Registered, Shared, SpawnOf, Spawner, Spawning};
use crate::signal::Signal;
use crate::spawns::Spawns;
use crate::wire::{self, Init, SpawnRequest, Spawned, ToChild, ToParent, MAX_FRAME};
use crate::{sys, task, Builder, Cluster, Context, Envelope, Error, ErrorKind, Message, Props, Reason, Reply, Result};

/// Inside a process worker: spawns go to the parent, which runs the cluster.
struct ViaParent<M> {
    link: Arc<Link<M>>,
    /// The spawns asked of the parent that await its answer.
    spawns: Arc<Spawns<M>>,
}

impl<M: Message> Spawner<M> for ViaParent<M> {
    fn spawn<'a>(&'a self, _: &'a Arc<Shared<M>>, spawn: SpawnOf<'a>, _: Registered<M>) -> Spawning<'a, M> {
        // Registered in the parent: this process learns of it from the parent's `Up`.
        let SpawnOf { kind, path, props, entry } = spawn;
        let frame = |spawn: &SpawnRequest| wire::encode(&ToParent::<()>::Spawn(spawn.clone()));
        Box::pin(self.spawns.request(&self.link, frame, kind, path, props, entry))
    }

    fn spawn_fn<'a>(&'a self, _: &'a Arc<Shared<M>>, path: &'a str, _: Props, _: Start<M>) -> Spawning<'a, M> {
        let message = "a process worker cannot spawn a worker from a closure, which cannot cross to the parent \
                       process that spawns for it; register an entry and use spawn or spawn_process";
        Box::pin(std::future::ready(Err(Error::new(ErrorKind::Unsupported, message).with_path(path))))
    }

    fn runs_the_cluster(&self) -> bool {
        false
    }
}

/// Runs this process as a process worker, and exits, if it was started as one by
/// [`Cluster::spawn_process`]; otherwise returns at once.
///
/// Call it first thing in `main`, with a builder that registers the same entries as the
/// parent's (the rest of the builder is not used: the child takes its scope and mailbox
/// size from the parent). It may be called inside or outside a Tokio runtime: the worker
/// runs on a single-threaded runtime of its own (use `spawn_blocking` for blocking work).
/// The process exits with status 0 when the entry returns `Ok`, 1 otherwise. In a test
/// binary, call it from a test selected by [`Builder::child_args`], which does nothing
/// in the test run itself.
///
/// At start-up the child asks the kernel for SIGKILL when its parent dies, then checks
/// that its parent is still the one that started it: no worker outlives its parent.
///
/// # Examples
/// ```no_run
/// use latchkey_cluster::{Builder, Cluster, Context};
///
/// async fn worker(mut ctx: Context<u64>) -> Result<(), String> {
///     while ctx.recv().await.is_some() {}
///     Ok(())
/// }
///
/// fn builder() -> Builder<u64> {
///     Cluster::builder().entry("worker", worker)
/// }
///
/// fn main() {
///     latchkey_cluster::child_main(builder());
///     // ... the parent: build a runtime, `builder().build()`, `spawn_process` ...
/// }
/// ```
pub fn child_main<M: Message>(builder: Builder<M>) {
    let Some(socket) = sys::child_socket() else { return };
    let code = match socket {
        Ok(socket) => match tokio::runtime::Handle::try_current() {
            // A runtime cannot start inside another on the same thread.
            Ok(_) => std::thread::spawn(move || serve(builder, socket)).join().unwrap_or(1),
            Err(_) => serve(builder, socket),
        },
        Err(err) => {
            eprintln!("latchkey-cluster: cannot start as a process worker: {err}");
            1
        }
    };
    std::process::exit(code)
}

/// Runs the worker; the exit status.
fn serve<M: Message>(builder: Builder<M>, mut socket: UnixStream) -> i32 {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
    let prepared = read_init(&mut socket).and_then(|init| Ok((init, runtime.map_err(|e| e.to_string())?)));
    let (init, runtime) = match prepared {
        Ok(prepared) => prepared,
        Err(why) => {
            let exit = wire::encode(&ToParent::<()>::Exit(Err(why))).expect("a frame without a message encodes");
            let _ = socket.write_all(&exit);
            return 1;
        }
    };
    let code = runtime.block_on(async move {
        let capacity = (init.capacity as usize).max(1);
        let result = match Link::new(tongue(), socket, capacity) {
            Ok((link, read)) => {
                let result = run(builder, init, link.clone(), Reader::new(read)).await;
                let _ = link.send(&ToParent::<()>::Exit(result.clone()));
                link.flush().await;
                result
            }
            Err(err) => Err(format!("cannot use the socket to the parent: {err}")),
        };
        i32::from(result.is_err())
    });
    // Not waiting for tasks of the entry's still blocked (`spawn_blocking`): the parent
    // learns of the end when the process exits.
    runtime.shutdown_background();
    code
}

/// What a child's end of its link says of itself: credits for the messages its worker
/// received, replies to the asks delivered to it.
fn tongue<M: Message>() -> Tongue<M> {
    Tongue {
        credit: |(id, to), n| {
            wire::encode(&ToParent::<()>::Credit { to: to.clone(), id: *id, n }).expect("a credit frame encodes")
        },
        reply: |ask, message| wire::encode(&ToParent::Reply { ask, message }),
        no_reply: |ask| wire::encode(&ToParent::<()>::NoReply { ask }).expect("a frame without a message encodes"),
        // The parent delivers only to the child's worker, which drops what it cannot take.
        fail: |ask, _| wire::encode(&ToParent::<()>::NoReply { ask }).expect("a frame without a message encodes"),
    }
}

/// How a child reaches every other worker: through the parent, which forwards.
fn route<M: Message>() -> Route<M> {
    Route {
        deliver: |cell, ask, envelope| {
            let (to, id, message) = (cell.path.clone(), cell.id, envelope.message());
            wire::encode(&ToParent::Send { to, id, ask, message })
        },
        control: Some(|cell, control| {
            let (to, id) = (cell.path.clone(), cell.id);
            let frame = match control {
                Control::Stop => ToParent::<()>::Stop { to, id },
                Control::Kill => ToParent::Kill { to, id },
            };
            wire::encode(&frame).expect("a frame without a message encodes")
        }),
        window: "window of sends waiting in the parent",
        ours: false,
    }
}

/// Reads the first frame, before anything else uses the socket.
fn read_init(socket: &mut UnixStream) -> Result<Init, String> {
    let fail = |e: std::io::Error| format!("cannot read the parent's first frame: {e}");
    let mut len = [0; 4];
    socket.read_exact(&mut len).map_err(fail)?;
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(format!("the parent's first frame of {len} bytes is longer than the {MAX_FRAME} allowed"));
    }
    let mut body = vec![0; len];
    socket.read_exact(&mut body).map_err(fail)?;
    wire::decode(&body).map_err(|e| format!("cannot decode the parent's first frame: {e}"))
}

/// Runs the entry named by the parent; how it ended.
async fn run<M: Message>(
    builder: Builder<M>,
    init: Init,
    link: Arc<Link<M>>,
    reader: Reader,
) -> std::result::Result<(), String> {
    let entries = builder.into_entries().map_err(|e| e.to_string())?;
    let scope = latchkey::Scope::open(&init.scope).map_err(|e| format!("cannot open the scope {}: {e}", init.scope))?;
    let capacity = link.capacity();
    let f = entries.get(&init.entry).cloned().ok_or_else(|| format!("no entry is registered as {:?}", init.entry))?;
    let spawns = Arc::new(Spawns::new());
    let shared = Arc::new(Shared {
        scope,
        entries: HashMap::<String, EntryFn<M>>::new(),
        mailbox: capacity,
        runtime: tokio::runtime::Handle::current(),
        registry: Mutex::new(Registry::new()),
        spawner: Arc::new(ViaParent { link: link.clone(), spawns: spawns.clone() }),
        nodes: None,
        child_args: Vec::new(),
    });
    let (cell, inbox) = Cell::task(init.id, init.path.clone(), init.props, capacity);
    let cell = Arc::new(cell);
    let cluster = Cluster::new(shared.clone()).as_worker(init.path);
    let ctx = Context::new(cell.clone(), inbox, cluster).with_credits(link.clone());

    // The reader ends the worker if the link breaks: `broken` says why.
    let (kill, broken) = (Arc::new(Signal::default()), Arc::new(OnceLock::new()));
    let child = Child { shared, cell, link, spawns, kill: kill.clone(), broken: broken.clone() };
    tokio::spawn(child.read(reader));
    match task::run(Box::new(move |ctx| f(ctx)), ctx, &kill).await {
        Reason::Normal => Ok(()),
        Reason::Failed(message) => Err(message),
        _ => Err(broken.get().cloned().unwrap_or_else(|| "the link to the parent broke".to_owned())),
    }
}

/// What the reader task updates.
struct Child<M> {
    shared: Arc<Shared<M>>,
    /// The worker of this process.
    cell: Arc<Cell<M>>,
    link: Arc<Link<M>>,
    spawns: Arc<Spawns<M>>,
    kill: Arc<Signal>,
    broken: Arc<OnceLock<String>>,
}

impl<M: Message> Child<M> {
    async fn read(self, mut reader: Reader) {
        loop {
            while let Some(frame) = reader.next::<ToChild<M>>() {
                match frame {
                    Ok(frame) => self.take(frame),
                    Err(e) => return self.fail(format!("cannot decode a frame from the parent: {e}")),
                }
            }
            match reader.fill().await {
                Ok(true) => {}
                // The parent is gone (the kernel kills this process too).
                Ok(false) => return self.fail("the parent closed the link".to_owned()),
                Err(e) => return self.fail(format!("cannot read from the parent: {e}")),
            }
        }
    }

    fn take(&self, frame: ToChild<M>) {
        match frame {
            ToChild::Deliver { from, ask, message } => {
                let reply = ask.map(|ask| Reply::remote(self.link.clone(), ask, from.clone()));
                // The parent sends no more than the credits allow; a worker that has
                // ended drops the message, and an ask's reply with it.
                let _ = self.cell.push_local(Envelope::new(message, from, reply));
            }
            ToChild::Answer { ask, result } => self.link.answer(ask, Some(result.map_err(Error::from))),
            ToChild::Up { id, path, props, pid } => {
                let cell = Cell::linked(id, path, props, pid, self.link.clone(), route());
                self.shared.registry.lock().insert(Arc::new(cell));
            }
            ToChild::Down { id, path, reason } => {
                if let Some(cell) = self.shared.find(&path, id) {
                    self.shared.ended(&cell, reason);
                }
            }
            ToChild::Credit { to, id, n } => self.link.credit(&(id, to), n),
            ToChild::Stop => drop(self.cell.stopping.fire()),
            ToChild::Spawned { request, result } => {
                let result = result.map(|spawned| self.spawned(spawned)).map_err(Error::from);
                self.spawns.answer(request, result);
            }
        }
    }

    /// The worker a spawn of this child started: the one its `Up`, which the parent sends
    /// first, registered here; else (an `Up` that never came) registered now.
    fn spawned(&self, spawned: Spawned) -> Arc<Cell<M>> {
        let Spawned { id, path, props, pid } = spawned;
        let mut registry = self.shared.registry.lock();
        match registry.get(&path) {
            Some(cell) if cell.id == id => cell.clone(),
            _ => {
                let cell = Arc::new(Cell::linked(id, path, props, pid, self.link.clone(), route()));
                registry.insert(cell.clone());
                cell
            }
        }
    }

    fn fail(&self, why: String) {
        let _ = self.broken.set(why);
        self.spawns.close(); // spawns waiting for the parent fail at once
        self.kill.fire();
    }
}
