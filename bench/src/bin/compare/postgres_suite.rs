//! Suite `postgres`: latchkey's PostgreSQL scope against PostgreSQL's own advisory locks
//! (`pg_advisory_lock` / `pg_advisory_unlock` on a raw `tokio-postgres` connection), on the
//! same server, in the same run.
//!
//! The server is one that `latchkey-testkit` starts on a loopback port (`initdb` and
//! `postgres` on `PATH` or in `/usr/lib/postgresql/*/bin`), or the scope URL in
//! `LATCHKEY_BENCH_URL` when that is set. Every name the suite takes carries this
//! process's id; so does every advisory key (a hash of such a name).
//!
//! - Uncontended (this module): `mutex.lock_blocking()` and `guard.release()` against, on
//!   one raw connection with prepared statements: (a) the advisory pair on a current-thread
//!   Tokio runtime driven by the measuring thread; (b) the same pair, each call sent to a
//!   runtime on another thread and waited for there, as the scope does; (c) latchkey's own
//!   two statements ([`statements`]) on the measuring thread's runtime.
//! - Hand-off ([`handoff`]) and terminate-to-lost / terminate-to-grant ([`terminate`]):
//!   child processes of this binary ([`child`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use latchkey::Scope;
use latchkey_bench::{alternate, per_op, Row};
use latchkey_postgres::{Config, TlsMode};
use latchkey_testkit::PostgresServer;
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;
use tokio_postgres::{Client, NoTls, Statement};

mod child;
mod handoff;
mod statements;
mod terminate;

pub use child::child_main;

/// The environment variable that names a server to use instead of a testkit one.
const URL_VAR: &str = "LATCHKEY_BENCH_URL";
/// Acquire-and-release cycles per round of an uncontended case (each is two statements, a
/// fraction of a millisecond on loopback).
const UNCONTENDED_ITERS: u64 = 200;
/// A hang guard for one statement of a peer that is not expected to wait.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

const RAW_PAIR: &str = "pg_advisory_lock + pg_advisory_unlock";
const RAW_HOP: &str = "same, each call through a runtime thread";
const RAW_STATEMENTS: &str = "latchkey's statements, raw";

/// Where the suite runs: the scope URL, what it parses to, and the server if the suite
/// started one (stopped on drop).
pub struct Target {
    /// The scope URL of latchkey, as given.
    pub url: String,
    pub config: Config,
    /// Unique to this run: `bench-<pid>`.
    pub run: String,
    _server: Option<PostgresServer>,
}

impl Target {
    fn start() -> Target {
        let (url, server) = match std::env::var(URL_VAR) {
            Ok(url) if !url.is_empty() => (url, None),
            _ => {
                let server = PostgresServer::start();
                (server.url(""), Some(server))
            }
        };
        let config = Config::parse(&url).unwrap_or_else(|e| panic!("{URL_VAR}: {e}"));
        eprintln!(
            "note: postgres suite on {} ({}), schema {:?}",
            config.describe(),
            if server.is_some() { "a testkit server" } else { URL_VAR },
            config.schema
        );
        if config.tls != TlsMode::Disable && server.is_none() {
            eprintln!(
                "note: the raw peers connect without TLS; add sslmode=disable to the URL to compare like with like"
            );
        }
        Target { url, config, run: format!("bench-{}", std::process::id()), _server: server }
    }

    /// The scope URL with `key=value` as a query parameter (any other `key=` dropped).
    pub fn url_with(&self, key: &str, value: &str) -> String {
        with_param(&self.url, key, value)
    }

    /// A name of latchkey's for this run.
    pub fn name(&self, what: &str) -> String {
        format!("{}/{what}", self.run)
    }

    /// The advisory key of the raw peers for `what`: a hash of [`name`](Target::name).
    pub fn key(&self, what: &str) -> i64 {
        advisory_key(&self.name(&format!("advisory/{what}")))
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

/// The 64-bit advisory key of a name (FNV-1a).
pub fn advisory_key(name: &str) -> i64 {
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    hash as i64
}

/// A current-thread Tokio runtime: what the raw peers run on.
pub fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("cannot build a runtime")
}

/// The raw peers' connection settings for the scope URL `url`: the same server, user,
/// database and `application_name`, without TLS.
pub fn raw_config(url: &str) -> tokio_postgres::Config {
    let mut connection = Config::parse(url).expect("a bad PostgreSQL URL").connection;
    connection.ssl_mode(tokio_postgres::config::SslMode::Disable);
    connection
}

/// Connects a raw client; its connection runs as a task of the current runtime, whose
/// handle completes when the connection ends.
pub async fn connect(config: &tokio_postgres::Config) -> (Client, JoinHandle<()>) {
    let (client, connection) = bounded("connect", config.connect(NoTls)).await;
    let ended = tokio::spawn(async move {
        let _ = connection.await;
    });
    (client, ended)
}

/// Bounds a statement of a peer that is not expected to wait.
pub async fn bounded<T>(what: &str, call: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>) -> T {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(e)) => panic!("PostgreSQL {what} failed: {e}"),
        Err(_) => panic!("PostgreSQL {what}: no answer in {CALL_TIMEOUT:?}"),
    }
}

pub fn run(emit: &dyn Fn(Row)) {
    let began = Instant::now();
    let target = Target::start();
    uncontended(emit, &target);
    handoff::handoff(emit, &target);
    terminate::terminate(emit, &target);
    eprintln!("note: postgres suite took {:.1} s", began.elapsed().as_secs_f64());
}

fn row(case: &str, ours_ns: f64, peer: &str, peer_ns: f64) -> Row {
    Row { case: case.to_string(), ours_ns, peer: peer.to_string(), peer_ns }
}

/// A raw connection with the advisory pair prepared, on a current-thread runtime that the
/// calling thread drives.
pub struct Raw {
    pub rt: Runtime,
    pub client: Client,
    lock: Statement,
    unlock: Statement,
}

impl Raw {
    pub fn connect(config: &tokio_postgres::Config) -> Raw {
        let rt = runtime();
        let (client, lock, unlock) = rt.block_on(async {
            let (client, _) = connect(config).await;
            let (lock, unlock) = prepare_pair(&client).await;
            (client, lock, unlock)
        });
        Raw { rt, client, lock, unlock }
    }

    /// `pg_advisory_lock(key)`: waits as long as it takes.
    pub fn lock(&self, key: i64) {
        self.rt.block_on(self.client.execute(&self.lock, &[&key])).expect("pg_advisory_lock failed");
    }

    pub fn unlock(&self, key: i64) {
        let row = self.rt.block_on(bounded("pg_advisory_unlock", self.client.query_one(&self.unlock, &[&key])));
        assert!(row.get::<_, bool>(0), "pg_advisory_unlock: the key was not held");
    }

    /// ns per cycle of `iters` { pg_advisory_lock; pg_advisory_unlock } on `key`.
    fn cycles(&self, iters: u64, key: i64) -> f64 {
        self.rt.block_on(async {
            let start = Instant::now();
            for _ in 0..iters {
                bounded("pg_advisory_lock", self.client.execute(&self.lock, &[&key])).await;
                let row = bounded("pg_advisory_unlock", self.client.query_one(&self.unlock, &[&key])).await;
                assert!(row.get::<_, bool>(0), "pg_advisory_unlock: the key was not held");
            }
            start.elapsed().as_nanos() as f64 / iters as f64
        })
    }
}

async fn prepare_pair(client: &Client) -> (Statement, Statement) {
    let lock = bounded("prepare", client.prepare("SELECT pg_advisory_lock($1)")).await;
    let unlock = bounded("prepare", client.prepare("SELECT pg_advisory_unlock($1)")).await;
    (lock, unlock)
}

/// The advisory pair on a runtime of a thread of its own, as the scope's calls are: each
/// call is sent there and waited for with a thread park (the cost of that hop, without
/// latchkey).
struct Hop {
    handle: tokio::runtime::Handle,
    client: Arc<Client>,
    lock: Statement,
    unlock: Statement,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Hop {
    fn start(config: &tokio_postgres::Config) -> Hop {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let config = config.clone();
        std::thread::spawn(move || {
            runtime().block_on(async {
                let (client, _) = connect(&config).await;
                let (lock, unlock) = prepare_pair(&client).await;
                let ready = (tokio::runtime::Handle::current(), Arc::new(client), lock, unlock);
                ready_tx.send(ready).expect("the bench is gone");
                let _ = stop_rx.await;
            });
        });
        let (handle, client, lock, unlock) = ready_rx.recv().expect("the hop thread failed");
        Hop { handle, client, lock, unlock, _stop: stop_tx }
    }

    fn call<T: Send + 'static>(&self, work: impl std::future::Future<Output = T> + Send + 'static) -> T {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.handle.spawn(async move {
            let _ = tx.send(work.await);
        });
        rx.blocking_recv().expect("the hop thread is gone")
    }

    /// As [`Raw::cycles`], each of the two calls through the hop.
    fn cycles(&self, iters: u64, key: i64) -> f64 {
        let start = Instant::now();
        for _ in 0..iters {
            let (client, lock) = (self.client.clone(), self.lock.clone());
            self.call(async move { bounded("pg_advisory_lock", client.execute(&lock, &[&key])).await });
            let (client, unlock) = (self.client.clone(), self.unlock.clone());
            let row = self.call(async move { bounded("pg_advisory_unlock", client.query_one(&unlock, &[&key])).await });
            assert!(row.get::<_, bool>(0), "pg_advisory_unlock: the key was not held");
        }
        start.elapsed().as_nanos() as f64 / iters as f64
    }
}

/// `postgres/uncontended/mutex`: one acquire and its release, nobody else on the name.
/// Each round of ours, and of latchkey's statements sent raw, takes a name of its own.
fn uncontended(emit: &dyn Fn(Row), target: &Target) {
    let scope = Scope::open(&target.url).expect("cannot open the PostgreSQL scope");
    let mut round = 0;
    let mut ours = || {
        round += 1;
        let mutex = scope.mutex(&target.name(&format!("uncontended/{round}"))).expect("cannot open the mutex");
        per_op(UNCONTENDED_ITERS, || mutex.lock_blocking().unwrap().release().unwrap())
    };
    let config = raw_config(&target.url_with("application_name", &format!("{}-raw", target.run)));
    let raw = Raw::connect(&config);
    let key = target.key("uncontended");
    let case = "postgres/uncontended/mutex";

    let (o, p) = alternate(&mut ours, || raw.cycles(UNCONTENDED_ITERS, key));
    emit(row(case, o, RAW_PAIR, p));

    let hop = Hop::start(&config);
    let (o, p) = alternate(&mut ours, || hop.cycles(UNCONTENDED_ITERS, key));
    emit(row(case, o, RAW_HOP, p));
    drop(hop);

    let statements = statements::Latchkey::prepare(&raw, &target.config.schema);
    let mut raw_round = 0;
    let (o, p) = alternate(&mut ours, || {
        raw_round += 1;
        statements.cycles(&raw, UNCONTENDED_ITERS, &target.name(&format!("statements/{raw_round}")))
    });
    emit(row(case, o, RAW_STATEMENTS, p));
    scope.close_blocking().expect("cannot close the PostgreSQL scope");
}
