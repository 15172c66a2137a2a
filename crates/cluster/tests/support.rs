//! What the suites share: a message type, a worker entry that obeys it, cluster builders,
//! and a guard against hangs.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use latchkey::Scope;
use latchkey_cluster::{Builder, Cluster, Context, Props, Reply, WorkerRef};
use serde::{Deserialize, Serialize};

/// Long enough never to pass in a healthy run; only catches hangs.
pub const HANG: Duration = Duration::from_secs(60);

/// A generous grace or timeout for things that must happen.
pub const LONG: Duration = Duration::from_secs(30);

/// What the test workers understand.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Msg {
    /// Recorded; an ask gets it back.
    Num(u64),
    /// Recorded; an ask gets it back.
    Text(String),
    /// Ask: how many `Num`/`Text` were recorded, as `Num`.
    Count,
    /// Ask: every recorded `Num` with its sender, as `Log`.
    Seen,
    /// The answer to `Seen`.
    Log(Vec<(Option<String>, u64)>),
    /// Ask: the value of a property, as `Text` (empty if unset).
    Prop(String),
    /// Ask: take the named mutex in the cluster's scope and keep it; replies `Text("locked")`.
    Lock(String),
    /// Ask: kept unanswered for as long as the worker lives.
    Hold,
    /// Ask: dropped unanswered.
    Drop,
    /// Stop receiving and wait forever (until killed).
    Hang,
    /// Panic.
    Panic,
    /// Return `Err` with this message.
    Fail(String),
    /// Return `Ok`.
    Quit,
    /// Encodes, but never decodes: a message the receiving process cannot read.
    Undecodable(#[serde(deserialize_with = "refuse")] u8),
    /// Ask: reply with [`Msg::Undecodable`].
    ReplyUndecodable,
    /// Ask: ask the worker at this path (found with the worker's own cluster handle) and
    /// reply with its answer, or with `Text` of the error kind.
    AskOther(String, Box<Msg>),
    /// Ask: send `n` numbers `0..n` to the worker at this path, in order; reply `Num(n)`.
    Burst(String, u64),
    /// Ask: send `n` numbers `0..n` to the worker at this path without waiting for them to
    /// arrive; reply `Num(n)`.
    Fire(String, u64),
    /// Ask: send `n` numbers `0..n` to the worker at this path from a task of their own,
    /// and reply `Num(n)` at once.
    FireInBackground(String, u64),
    /// Ask: from a task of its own, send `n` numbers `0..n` to the worker at this path,
    /// then stop it; reply `Num(n)` at once.
    FireThenStop(String, u64),
    /// Ask: the paths under the prefix, as `Text`, separated by commas.
    Lookup(String),
    /// Ask: spawn a worker from inside, at `path`, from `entry`, as `how` says, with the
    /// property `by` set to this worker's path; then send it `Num(1)` and ask it `Count`.
    /// Replies `Spawned`, or `Text` of the error: `"{kind:?}: {error}"`.
    Spawn { path: String, entry: String, how: How },
    /// The answer to `Spawn`: the new worker's path and pid, and its answer to `Count`.
    Spawned { path: String, pid: Option<u32>, count: Box<Msg> },
    /// Ask: spawn `worker`s under this prefix from inside, tasks and processes in turn,
    /// until a spawn fails; `Text` of its error kind.
    SpawnUntilRefused(String),
    /// Ask: subscribe to membership events, tell the worker at this path to quit, and
    /// reply with the events about it until its `Down`, as `Text`.
    QuitAndWatch(String),
    /// Ask: kill the worker at this path, and reply with how it ended, as `Text`.
    KillOther(String),
    /// Ask: the node this worker runs on (`Cluster::node`), as `Text` (empty if none).
    WhichNode,
}

/// Sends `to` the numbers `0..n`, in order.
async fn send_numbers(to: &WorkerRef<Msg>, n: u64) -> Result<(), String> {
    for i in 0..n {
        to.send(Msg::Num(i)).await.map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// How [`Msg::Spawn`] spawns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum How {
    /// `spawn`: a task.
    Task,
    /// `spawn_process`: a process.
    Process,
    /// `spawn_fn`: a closure that returns at once (`entry` is not used).
    Closure,
}

fn refuse<'de, D: serde::Deserializer<'de>>(_: D) -> Result<u8, D::Error> {
    Err(serde::de::Error::custom("this message refuses to be decoded"))
}

/// The entry of the test workers: obeys [`Msg`] until its mailbox is closed and drained.
pub async fn worker(mut ctx: Context<Msg>) -> Result<(), String> {
    let mut log = Vec::new();
    let mut locks = Vec::new();
    let mut held: Vec<Reply<Msg>> = Vec::new();
    while let Some(mut envelope) = ctx.recv().await {
        let sender = envelope.sender().map(|p| p.to_string());
        let answer = match envelope.message().clone() {
            Msg::Num(n) => {
                log.push((sender, n));
                Msg::Num(n)
            }
            text @ Msg::Text(_) => {
                log.push((sender, u64::MAX));
                text
            }
            Msg::Count => Msg::Num(log.len() as u64),
            Msg::Seen => Msg::Log(log.iter().filter(|(_, n)| *n != u64::MAX).cloned().collect()),
            Msg::Prop(key) => Msg::Text(ctx.props().get(&key).unwrap_or_default().to_owned()),
            Msg::WhichNode => Msg::Text(ctx.cluster().node().map(|node| node.to_string()).unwrap_or_default()),
            Msg::Lock(name) => {
                locks.push(ctx.scope().lock(&name).await.map_err(|e| e.to_string())?);
                Msg::Text("locked".to_owned())
            }
            Msg::Hold => {
                held.extend(envelope.take_reply());
                continue;
            }
            Msg::Drop => continue,
            Msg::Hang => std::future::pending().await,
            Msg::Panic => panic!("asked to panic"),
            Msg::Fail(message) => return Err(message),
            Msg::Quit => return Ok(()),
            Msg::Log(_) | Msg::Undecodable(_) | Msg::Spawned { .. } => continue,
            Msg::ReplyUndecodable => Msg::Undecodable(0),
            Msg::AskOther(path, message) => match ctx.cluster().lookup(&path) {
                None => Msg::Text("not found".to_owned()),
                Some(other) => match other.ask(*message, LONG).await {
                    Ok(answer) => answer,
                    Err(e) => Msg::Text(format!("{:?}", e.kind())),
                },
            },
            Msg::Burst(path, n) => {
                let other = ctx.cluster().lookup(&path).ok_or("nobody to burst to")?;
                send_numbers(&other, n).await?;
                // A send returns once the message is on its way; an ask after them, from
                // the same sender, is answered only once they have all arrived.
                other.ask(Msg::Count, LONG).await.map_err(|e| e.to_string())?;
                Msg::Num(n)
            }
            Msg::Fire(path, n) => {
                let other = ctx.cluster().lookup(&path).ok_or("nobody to fire at")?;
                send_numbers(&other, n).await?;
                Msg::Num(n)
            }
            Msg::FireInBackground(path, n) => {
                let other = ctx.cluster().lookup(&path).ok_or("nobody to fire at")?;
                tokio::spawn(async move { send_numbers(&other, n).await });
                Msg::Num(n)
            }
            Msg::FireThenStop(path, n) => {
                let other = ctx.cluster().lookup(&path).ok_or("nobody to fire at")?;
                tokio::spawn(async move {
                    if send_numbers(&other, n).await.is_ok() {
                        other.stop(LONG).await;
                    }
                });
                Msg::Num(n)
            }
            Msg::Lookup(prefix) => {
                let paths: Vec<String> =
                    ctx.cluster().lookup_prefix(&prefix).iter().map(|w| w.path().to_string()).collect();
                Msg::Text(paths.join(","))
            }
            Msg::QuitAndWatch(path) => {
                let (mut events, mut seen) = (ctx.events(), Vec::new());
                let other = ctx.cluster().lookup(&path).ok_or("nobody to watch")?;
                other.send(Msg::Quit).await.map_err(|e| e.to_string())?;
                while let Some(event) = events.next().await {
                    if event.path() == path.as_str() {
                        seen.push(format!("{event:?}"));
                        if !event.is_up() {
                            break;
                        }
                    }
                }
                Msg::Text(seen.join(" "))
            }
            Msg::KillOther(path) => {
                let other = ctx.cluster().lookup(&path).ok_or("nobody to kill")?;
                other.kill();
                Msg::Text(other.join().await.to_string())
            }
            Msg::Spawn { path, entry, how } => match spawn_and_ask(&ctx, &path, &entry, how).await {
                Ok(spawned) => spawned,
                Err(e) => Msg::Text(format!("{:?}: {e}", e.kind())),
            },
            Msg::SpawnUntilRefused(prefix) => {
                let cluster = ctx.cluster();
                let mut refused = Msg::Text("never refused".to_owned());
                for i in 0..1_000 {
                    let spawned = match i % 2 {
                        0 => cluster.spawn(&prefix, Props::new(), "worker").await,
                        _ => cluster.spawn_process(&prefix, Props::new(), "worker").await,
                    };
                    if let Err(e) = spawned {
                        refused = Msg::Text(format!("{:?}", e.kind()));
                        break;
                    }
                }
                refused
            }
        };
        if envelope.is_ask() {
            envelope.reply(answer).map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

/// What [`Msg::Spawn`] does: spawns, then messages the new worker at once.
async fn spawn_and_ask(ctx: &Context<Msg>, path: &str, entry: &str, how: How) -> latchkey_cluster::Result<Msg> {
    let (cluster, props) = (ctx.cluster(), Props::from([("by", ctx.path().as_str())]));
    let spawned = match how {
        How::Task => cluster.spawn(path, props, entry).await?,
        How::Process => cluster.spawn_process(path, props, entry).await?,
        How::Closure => cluster.spawn_fn(path, props, |_| async { Ok::<(), String>(()) }).await?,
    };
    spawned.send(Msg::Num(1)).await?;
    let count = spawned.ask(Msg::Count, LONG).await?;
    Ok(Msg::Spawned { path: spawned.path().to_string(), pid: spawned.pid(), count: Box::new(count) })
}

/// Waits until asked to stop, without receiving.
pub async fn sleeper(ctx: Context<Msg>) -> Result<(), String> {
    ctx.stop_requested().await;
    Ok(())
}

/// A builder with the `worker` and `sleeper` entries and a process scope of its own.
pub fn builder() -> Builder<Msg> {
    Cluster::builder().scope(Scope::isolated()).entry("worker", worker).entry("sleeper", sleeper)
}

/// The test that runs a process worker: this binary is run again with these arguments.
pub const CHILD_ARGS: [&str; 4] = ["--exact", "processes::child", "--nocapture", "--test-threads=1"];

/// A builder for a cluster with process workers: the entries of [`builder`], a host
/// scope in `dir`, and the arguments that make a child run [`CHILD_ARGS`]' test.
pub fn process_builder(dir: &TempDir) -> Builder<Msg> {
    let scope = Scope::open(&format!("host:{}", dir.0.display())).expect("the host scope opens in a new directory");
    builder().scope(scope).child_args(CHILD_ARGS)
}

/// A cluster for process workers, and the directory of its host scope (kept until the
/// end of the test: children open the same scope).
pub fn process_cluster() -> (Cluster<Msg>, TempDir) {
    let dir = TempDir::new();
    let cluster = process_builder(&dir).build().expect("a cluster builds within a runtime");
    (cluster, dir)
}

/// A new directory, removed when dropped.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("latchkey-cluster-proc-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create a temporary directory");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Whether `pid` is a running process (a zombie is not).
pub fn is_running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses.
        Ok(stat) => stat.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

/// Whether `pid` names no process at all, not even a zombie: it was reaped.
pub fn is_gone(pid: u32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    let r = unsafe { libc::kill(pid as libc::pid_t, 0) };
    r == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
}

/// A cluster with the `worker` entry and a process scope of its own.
pub fn cluster() -> Cluster<Msg> {
    builder().build().expect("a cluster builds within a runtime")
}

/// A host scope in a new directory of its own (removed at once: the scope keeps its
/// namespace file mapped).
pub fn host_scope() -> Scope {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("latchkey-cluster-test-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let scope = Scope::open(&format!("host:{}", dir.display())).expect("the host scope opens in a new directory");
    remove_at_exit(dir);
    scope
}

/// Removes `dir` when the process exits. (A namespace whose directory is deleted while in
/// use is lost: nothing more is granted in it.)
fn remove_at_exit(dir: std::path::PathBuf) {
    static DIRS: std::sync::Mutex<Vec<std::path::PathBuf>> = std::sync::Mutex::new(Vec::new());
    static REGISTER: std::sync::Once = std::sync::Once::new();
    extern "C" fn remove_all() {
        for dir in DIRS.lock().map(|mut dirs| std::mem::take(&mut *dirs)).unwrap_or_default() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
    // SAFETY: registers a plain function to run at exit.
    REGISTER.call_once(|| unsafe {
        libc::atexit(remove_all);
    });
    DIRS.lock().unwrap().push(dir);
}

/// Awaits `future`, failing the test if it hangs.
pub async fn within<T>(future: impl Future<Output = T>) -> T {
    tokio::time::timeout(HANG, future).await.expect("the operation hung")
}

/// Starts an ask of `message` that waits for its reply: the message is in the mailbox
/// when this returns, before anything sent after.
pub async fn start_ask(
    worker: &latchkey_cluster::WorkerRef<Msg>,
    message: Msg,
) -> std::pin::Pin<Box<dyn Future<Output = latchkey_cluster::Result<Msg>> + Send + '_>> {
    let mut asking = Box::pin(worker.ask(message, LONG));
    let sent = std::future::poll_fn(|cx| std::task::Poll::Ready(asking.as_mut().poll(cx).is_pending())).await;
    assert!(sent, "the ask waits for its reply");
    asking
}

/// Asks `worker` and unwraps the reply.
pub async fn ask(worker: &latchkey_cluster::WorkerRef<Msg>, message: Msg) -> Msg {
    within(worker.ask(message, LONG)).await.expect("the worker answers")
}
