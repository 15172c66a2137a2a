//! Suite `redis`: latchkey's Redis scope against the raw Redis lock (`SET key token NX PX`,
//! then a scripted compare-and-delete) on a raw `redis` connection, and against `rslock`,
//! on the same server, in the same run.
//!
//! The server is one that `latchkey-testkit` starts on a loopback port (`redis-server` and
//! `redis-cli` on `PATH`), or the scope URL in `LATCHKEY_BENCH_URL` when that is set. Every
//! name the suite takes carries this process's id, and so does every raw key (under the
//! URL's prefix, outside latchkey's key layout).
//!
//! - Uncontended (this module): `mutex.lock_blocking()` and `guard.release()` against, on
//!   one raw multiplexed connection: (a) the raw pair on a current-thread Tokio runtime
//!   driven by the measuring thread; (b) the same pair, each call sent to a runtime on
//!   another thread and waited for there, as the scope does; (c) latchkey's own two scripts
//!   ([`scripts`]) on the measuring thread's runtime; (d) `rslock`'s lock and unlock
//!   ([`rslock_peer`]).
//! - Hand-off ([`handoff`]) and SIGKILL-to-grant ([`kill`]): child processes of this binary
//!   ([`child`]).

use std::time::{Duration, Instant};

use latchkey::Scope;
use latchkey_bench::{alternate, per_op, Row};
use latchkey_redis::Config;
use latchkey_testkit::RedisServer;
use redis::aio::MultiplexedConnection;
use redis::Script;
use tokio::runtime::Runtime;

mod child;
mod handoff;
mod kill;
mod rslock_peer;
mod scripts;

pub use child::child_main;

/// The environment variable that names a server to use instead of a testkit one.
const URL_VAR: &str = "LATCHKEY_BENCH_URL";
/// Acquire-and-release cycles per round of an uncontended case (each is two round trips,
/// a few tens of µs on loopback).
const UNCONTENDED_ITERS: u64 = 500;
/// A hang guard for one command of a peer.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// The raw key's expiry (`PX`), as latchkey's default session TTL.
pub const RAW_TTL_MS: u64 = 10_000;

/// The raw release: deletes the key only if it still holds this holder's token.
const COMPARE_AND_DELETE: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
                                  return redis.call('DEL', KEYS[1]) else return 0 end";

const RAW_PAIR: &str = "SET NX PX + EVALSHA compare-and-delete";
const RAW_HOP: &str = "same, each call through a runtime thread";
const RAW_SCRIPTS: &str = "latchkey's scripts, raw";
const RSLOCK: &str = "rslock 0.10 lock + unlock";

/// Where the suite runs: the scope URL, what it parses to, and the server if the suite
/// started one (stopped on drop).
pub struct Target {
    /// The scope URL of latchkey, as given.
    pub url: String,
    pub config: Config,
    /// Unique to this run: `bench-<pid>`.
    pub run: String,
    server: Option<RedisServer>,
}

impl Target {
    fn start() -> Target {
        let (url, server) = match std::env::var(URL_VAR) {
            Ok(url) if !url.is_empty() => (url, None),
            _ => {
                let server = RedisServer::start();
                (server.url(""), Some(server))
            }
        };
        let config = Config::parse(&url).unwrap_or_else(|e| panic!("{URL_VAR}: {e}"));
        eprintln!(
            "note: redis suite on {} database {} ({}), key prefix {:?}",
            config.address,
            config.db,
            if server.is_some() { "a testkit server" } else { URL_VAR },
            config.prefix
        );
        Target { url, config, run: format!("bench-{}", std::process::id()), server }
    }

    /// The scope URL with `key=value` as a query parameter (any other `key=` dropped).
    pub fn url_with(&self, key: &str, value: &str) -> String {
        with_param(&self.url, key, value)
    }

    /// A name of latchkey's for this run.
    pub fn name(&self, what: &str) -> String {
        format!("{}/{what}", self.run)
    }

    /// A key of the raw peers for `what`: under the URL's prefix, outside latchkey's keys
    /// (which are `{prefix}:{…}:…`).
    pub fn raw_key(&self, what: &str) -> String {
        format!("{}:bench-raw:{}/{what}", self.config.prefix, self.run)
    }
}

/// `url` with its `key=` replaced by `key=value`.
pub fn with_param(url: &str, key: &str, value: &str) -> String {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let prefix = format!("{key}=");
    let mut pairs: Vec<String> =
        query.split('&').filter(|p| !p.is_empty() && !p.starts_with(&prefix)).map(str::to_string).collect();
    pairs.push(format!("{key}={value}"));
    format!("{base}?{}", pairs.join("&"))
}

/// A current-thread Tokio runtime: what the raw peers run on.
pub fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("cannot build a runtime")
}

/// A raw multiplexed connection to the server of `config`, with TLS as the scope's (its
/// driver is a task of the current runtime).
pub async fn connect(config: &Config) -> MultiplexedConnection {
    let client = config.client().unwrap_or_else(|e| panic!("the raw peers cannot connect: {e}"));
    bounded("connect", client.get_multiplexed_async_connection()).await
}

/// Bounds a command of a peer.
pub async fn bounded<T>(what: &str, call: impl std::future::Future<Output = redis::RedisResult<T>>) -> T {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(e)) => panic!("Redis {what} failed: {e}"),
        Err(_) => panic!("Redis {what}: no answer in {CALL_TIMEOUT:?}"),
    }
}

/// `SET key token NX PX RAW_TTL_MS`: whether it was set.
pub async fn set_nx(connection: &mut MultiplexedConnection, key: &str, token: &str) -> bool {
    let set: Option<String> = bounded(
        "SET NX PX",
        redis::cmd("SET").arg(key).arg(token).arg("NX").arg("PX").arg(RAW_TTL_MS).query_async(connection),
    )
    .await;
    set.is_some()
}

/// The compare-and-delete script on `key` for `token`: whether it deleted the key.
pub async fn compare_and_delete(
    connection: &mut MultiplexedConnection,
    script: &Script,
    key: &str,
    token: &str,
) -> bool {
    let deleted: i64 = bounded("EVALSHA", script.key(key).arg(token).invoke_async(connection)).await;
    deleted == 1
}

pub fn run(emit: &dyn Fn(Row)) {
    let began = Instant::now();
    let target = Target::start();
    uncontended(emit, &target);
    handoff::handoff(emit, &target);
    kill::kill_to_grant(emit, &target);
    eprintln!("note: redis suite took {:.1} s", began.elapsed().as_secs_f64());
}

fn row(case: &str, ours_ns: f64, peer: &str, peer_ns: f64) -> Row {
    Row { case: case.to_string(), ours_ns, peer: peer.to_string(), peer_ns }
}

/// A raw connection and the compare-and-delete script, on a current-thread runtime that
/// the calling thread drives.
pub struct Raw {
    pub rt: Runtime,
    pub connection: MultiplexedConnection,
    release: Script,
    /// Tokens handed out: each lock of this connection sets a new one.
    tokens: u64,
    /// Unique to this connection: `<pid>-<n>`.
    holder: String,
}

impl Raw {
    pub fn connect(config: &Config) -> Raw {
        static CONNECTIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let rt = runtime();
        let connection = rt.block_on(connect(config));
        let n = CONNECTIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let holder = format!("{}-{n}", std::process::id());
        Raw { rt, connection, release: Script::new(COMPARE_AND_DELETE), tokens: 0, holder }
    }

    /// A token never used before by any holder.
    fn next_token(&mut self) -> String {
        self.tokens += 1;
        format!("{}-{}", self.holder, self.tokens)
    }

    /// `SET NX PX` on `key` until it is set, sleeping `retry` between tries: the token.
    pub fn lock_retrying(&mut self, key: &str, retry: Duration) -> String {
        let token = self.next_token();
        let connection = &mut self.connection;
        self.rt.block_on(async {
            while !set_nx(connection, key, &token).await {
                tokio::time::sleep(retry).await;
            }
        });
        token
    }

    pub fn unlock(&mut self, key: &str, token: &str) {
        let (connection, script) = (&mut self.connection, &self.release);
        let deleted = self.rt.block_on(compare_and_delete(connection, script, key, token));
        assert!(deleted, "compare-and-delete: the key was not held with this token");
    }

    /// ns per cycle of `iters` { SET NX PX; compare-and-delete } on `key`.
    fn cycles(&mut self, iters: u64, key: &str) -> f64 {
        let first = self.tokens + 1;
        self.tokens += iters;
        let (connection, script, holder) = (&mut self.connection, &self.release, &self.holder);
        self.rt.block_on(async {
            let start = Instant::now();
            for n in first..first + iters {
                let token = format!("{holder}-{n}");
                assert!(set_nx(connection, key, &token).await, "SET NX: the raw key was already there");
                assert!(compare_and_delete(connection, script, key, &token).await, "the raw key was not there");
            }
            start.elapsed().as_nanos() as f64 / iters as f64
        })
    }
}

/// The raw pair on a runtime of a thread of its own, as the scope's calls are: each call is
/// sent there and waited for with a thread park (the cost of that hop, without latchkey).
struct Hop {
    handle: tokio::runtime::Handle,
    connection: MultiplexedConnection,
    release: Script,
    tokens: u64,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Hop {
    fn start(config: &Config) -> Hop {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let config = config.clone();
        std::thread::spawn(move || {
            runtime().block_on(async {
                let connection = connect(&config).await;
                ready_tx.send((tokio::runtime::Handle::current(), connection)).expect("the bench is gone");
                let _ = stop_rx.await;
            });
        });
        let (handle, connection) = ready_rx.recv().expect("the hop thread failed");
        Hop { handle, connection, release: Script::new(COMPARE_AND_DELETE), tokens: 0, _stop: stop_tx }
    }

    fn call<T: Send + 'static>(&self, work: impl std::future::Future<Output = T> + Send + 'static) -> T {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.handle.spawn(async move {
            let _ = tx.send(work.await);
        });
        rx.blocking_recv().expect("the hop thread is gone")
    }

    /// As [`Raw::cycles`], each of the two calls through the hop.
    fn cycles(&mut self, iters: u64, key: &str) -> f64 {
        let start = Instant::now();
        for _ in 0..iters {
            self.tokens += 1;
            let token = format!("{}-hop-{}", std::process::id(), self.tokens);
            let (mut connection, k, t) = (self.connection.clone(), key.to_string(), token.clone());
            let set = self.call(async move { set_nx(&mut connection, &k, &t).await });
            assert!(set, "SET NX: the raw key was already there");
            let (mut connection, k, script) = (self.connection.clone(), key.to_string(), self.release.clone());
            let deleted = self.call(async move { compare_and_delete(&mut connection, &script, &k, &token).await });
            assert!(deleted, "the raw key was not there");
        }
        start.elapsed().as_nanos() as f64 / iters as f64
    }
}

/// `redis/uncontended/mutex`: one acquire and its release, nobody else on the name. Each
/// round of ours, and of latchkey's scripts sent raw, takes a name of its own.
fn uncontended(emit: &dyn Fn(Row), target: &Target) {
    let scope = Scope::open(&target.url).expect("cannot open the Redis scope");
    let mut round = 0;
    let mut ours = || {
        round += 1;
        let mutex = scope.mutex(&target.name(&format!("uncontended/{round}"))).expect("cannot open the mutex");
        per_op(UNCONTENDED_ITERS, || mutex.lock_blocking().unwrap().release().unwrap())
    };
    let mut raw = Raw::connect(&target.config);
    let key = target.raw_key("uncontended");
    let case = "redis/uncontended/mutex";

    let (o, p) = alternate(&mut ours, || raw.cycles(UNCONTENDED_ITERS, &key));
    emit(row(case, o, RAW_PAIR, p));
    eprintln!(
        "note: {case}: ours / the raw pair {:.2}; the issue's target is at most 1.5, fencing token included",
        o / p
    );

    let mut hop = Hop::start(&target.config);
    let (o, p) = alternate(&mut ours, || hop.cycles(UNCONTENDED_ITERS, &key));
    emit(row(case, o, RAW_HOP, p));
    drop(hop);

    let mut scripts = scripts::Latchkey::new(&target.config.prefix);
    let mut raw_round = 0;
    let (o, p) = alternate(&mut ours, || {
        raw_round += 1;
        scripts.cycles(&mut raw, UNCONTENDED_ITERS, &target.name(&format!("scripts/{raw_round}")))
    });
    emit(row(case, o, RAW_SCRIPTS, p));

    let rslock = rslock_peer::Rslock::new(&target.config);
    let resource = target.raw_key("rslock");
    let (o, p) = alternate(&mut ours, || rslock.cycles(UNCONTENDED_ITERS, &resource));
    emit(row(case, o, RSLOCK, p));

    // Where the server's share goes: a round of each more, counted by the server (on a
    // server of the suite's own only: others' commands would count too).
    if target.server.is_some() {
        let n = UNCONTENDED_ITERS;
        let pair = server_time(&mut raw, n, &["set", "evalsha"], |raw| raw.cycles(n, &key));
        let name = target.name("scripts/server-time");
        let raw_scripts = server_time(&mut raw, n, &["evalsha"], |raw| scripts.cycles(raw, n, &name));
        let scope_time = server_time(&mut raw, n, &["evalsha"], |_| ours());
        eprintln!(
            "note: {case}: server time per cycle (INFO commandstats): {RAW_PAIR} {pair}; {RAW_SCRIPTS} {raw_scripts}; \
             ours {scope_time}"
        );
    }
    scope.close_blocking().expect("cannot close the Redis scope");
}

/// The time the server spent in the top-level `commands` while `work` ran `cycles` cycles
/// (and answered its ns per cycle), from `INFO commandstats` before and after, per cycle:
/// "X µs in N commands of Y µs".
fn server_time(raw: &mut Raw, cycles: u64, commands: &[&str], work: impl FnOnce(&mut Raw) -> f64) -> String {
    let before = command_stats(raw, commands);
    let ns = work(raw);
    let after = command_stats(raw, commands);
    let (calls, usec) = (after.0 - before.0, after.1 - before.1);
    format!(
        "{:.1} µs in {:.2} commands of {:.1} µs",
        usec as f64 / cycles as f64,
        calls as f64 / cycles as f64,
        ns / 1e3
    )
}

/// The calls and µs (`usec`) of `commands`, added up, from `INFO commandstats`.
fn command_stats(raw: &mut Raw, commands: &[&str]) -> (u64, u64) {
    let connection = &mut raw.connection;
    let info: String =
        raw.rt.block_on(bounded("INFO commandstats", redis::cmd("INFO").arg("commandstats").query_async(connection)));
    let (mut calls, mut usec) = (0, 0);
    for line in info.lines() {
        let Some((command, fields)) = line.strip_prefix("cmdstat_").and_then(|l| l.split_once(':')) else { continue };
        if !commands.contains(&command) {
            continue;
        }
        for field in fields.split(',') {
            match field.split_once('=') {
                Some(("calls", n)) => calls += n.parse::<u64>().unwrap_or(0),
                Some(("usec", n)) => usec += n.parse::<u64>().unwrap_or(0),
                _ => {}
            }
        }
    }
    (calls, usec)
}
