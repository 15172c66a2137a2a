//! Suite `etcd`: latchkey's etcd scope against the raw `etcd-client` doing the same writes
//! and against etcd's own Lock RPC, on the same cluster, in the same run.
//!
//! The cluster is one etcd member that `latchkey-testkit` starts on loopback ports (etcd
//! on `PATH`), or the scope URL in `LATCHKEY_BENCH_URL` when that is set. Every key the
//! suite writes is under the URL's prefix, in names and keys that carry this process's id.
//!
//! - Uncontended (this module): `mutex.lock_blocking()` and `guard.release()` against the
//!   raw client on a current-thread Tokio runtime driven by the measuring thread: (a) a Txn
//!   that puts a key on a lease if absent (`create_revision == 0`), then a Delete; (b) etcd's
//!   Lock RPC with a lease, then Unlock; (c) latchkey's own calls (a new key each time and
//!   the range read of the queue in the Txn); (d) the same calls, each sent to a runtime on
//!   another thread and waited for there, as the scope does.
//! - Hand-off and SIGKILL-to-grant ([`procs`]): child processes of this binary.

use std::time::{Duration, Instant};

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, GetOptions, LockOptions, PutOptions, Txn, TxnOp,
};
use latchkey::Scope;
use latchkey_bench::{alternate, per_op, Row};
use latchkey_etcd::Config;
use latchkey_testkit::EtcdCluster;
use tokio::runtime::Runtime;

mod floor;
mod procs;

pub use procs::child_main;

/// The environment variable that names a cluster to use instead of a testkit one.
const URL_VAR: &str = "LATCHKEY_BENCH_URL";
/// The key prefix of a testkit cluster's scope.
const PREFIX: &str = "latchkey-bench";
/// Acquire-and-release cycles per round of an uncontended case (each is two requests to
/// etcd, a fraction of a millisecond on loopback).
const UNCONTENDED_ITERS: u64 = 100;
/// Deleted request keys under the name of the last uncontended row.
const DELETED_REQUESTS: usize = 10_000;
/// The TTL of the raw peers' leases: long enough for the whole suite without keep-alives
/// (each is revoked at the end).
const RAW_LEASE_TTL: i64 = 120;
/// A hang guard for one etcd call of a peer.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

const RAW_TXN: &str = "etcd-client Txn put-if-absent + Delete";
const RAW_TXN_READ: &str = "same + range read in the Txn (latchkey's calls)";
const RAW_HOP: &str = "same, each call through a runtime thread";
const LOCK_RPC: &str = "etcd Lock(lease) + Unlock RPC";

/// Where the suite runs: the scope URL, what it parses to, and the cluster if the suite
/// started one (stopped on drop).
pub struct Target {
    /// The scope URL of latchkey, as given (default TTL).
    pub url: String,
    pub config: Config,
    /// Unique to this run: `bench-<pid>`.
    pub run: String,
    _cluster: Option<EtcdCluster>,
}

impl Target {
    fn start() -> Target {
        let (url, cluster) = match std::env::var(URL_VAR) {
            Ok(url) if !url.is_empty() => (url, None),
            _ => {
                let cluster = EtcdCluster::start(1);
                (cluster.url(PREFIX), Some(cluster))
            }
        };
        let config = Config::parse(&url).unwrap_or_else(|e| panic!("{URL_VAR}: {e}")).with_environment();
        eprintln!(
            "note: etcd suite on {} ({}), key prefix {:?}",
            config.endpoints.join(","),
            if cluster.is_some() { "a one-member testkit cluster" } else { URL_VAR },
            config.prefix
        );
        Target { url, config, run: format!("bench-{}", std::process::id()), _cluster: cluster }
    }

    /// The scope URL with `ttl` as the session's TTL (any other `ttl=` dropped).
    pub fn url_with_ttl(&self, ttl: Duration) -> String {
        with_ttl(&self.url, ttl)
    }

    /// A key of the raw peers, outside latchkey's names (`{prefix}/n/…`).
    pub fn raw_key(&self, what: &str) -> String {
        match self.config.prefix.as_str() {
            "" => format!("{}/{what}", self.run),
            prefix => format!("{prefix}/{}/{what}", self.run),
        }
    }

    /// A name of latchkey's for this run.
    pub fn name(&self, what: &str) -> String {
        format!("{}/{what}", self.run)
    }
}

/// `url` with its `ttl=` replaced by `ttl`.
pub fn with_ttl(url: &str, ttl: Duration) -> String {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut pairs: Vec<String> =
        query.split('&').filter(|p| !p.is_empty() && !p.starts_with("ttl=")).map(str::to_string).collect();
    pairs.push(format!("ttl={}s", ttl.as_secs()));
    format!("{base}?{}", pairs.join("&"))
}

/// A current-thread Tokio runtime: what the raw peers run on.
pub fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("cannot build a runtime")
}

/// A raw client of the cluster `config` names.
pub async fn connect(config: &Config) -> Client {
    let mut options = ConnectOptions::new().with_connect_timeout(CALL_TIMEOUT);
    if let Some((user, password)) = &config.credentials {
        options = options.with_user(user.clone(), password.clone());
    }
    Client::connect(&config.endpoints, Some(options)).await.expect("cannot connect the raw etcd client")
}

/// Bounds an etcd call of a peer.
pub async fn bounded<T>(what: &str, call: impl std::future::Future<Output = Result<T, etcd_client::Error>>) -> T {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(e)) => panic!("etcd {what} failed: {e}"),
        Err(_) => panic!("etcd {what}: no answer in {CALL_TIMEOUT:?}"),
    }
}

pub fn run(emit: &dyn Fn(Row)) {
    let began = Instant::now();
    let target = Target::start();
    uncontended(emit, &target);
    procs::handoff(emit, &target);
    procs::kill_to_grant(emit, &target);
    eprintln!("note: etcd suite took {:.1} s", began.elapsed().as_secs_f64());
}

fn row(case: &str, ours_ns: f64, peer: &str, peer_ns: f64) -> Row {
    Row { case: case.to_string(), ours_ns, peer: peer.to_string(), peer_ns }
}

/// The raw peers' connection: a runtime, a client and a lease.
struct Raw {
    rt: Runtime,
    client: Client,
    lease: i64,
}

impl Raw {
    /// A raw client with a lease of `ttl` seconds.
    fn with_lease(config: &Config, ttl: i64) -> Raw {
        let rt = runtime();
        let (client, lease) = rt.block_on(async {
            let mut client = connect(config).await;
            let lease = bounded("lease grant", client.lease_grant(ttl, None)).await.id();
            (client, lease)
        });
        Raw { rt, client, lease }
    }

    /// ns per cycle of `iters` { Txn put-if-absent; Delete }, on `key` every time; with
    /// `queue`, on a new key under it each time, with a range read of `queue` in the Txn
    /// (what latchkey's acquire sends).
    fn txn_cycles(&mut self, iters: u64, key: &str, queue: Option<&str>) -> f64 {
        let (client, lease) = (&mut self.client, self.lease);
        self.rt.block_on(async {
            let start = Instant::now();
            for i in 0..iters {
                let unique;
                let key = match queue {
                    Some(queue) => {
                        unique = format!("{queue}{i:016x}");
                        unique.as_str()
                    }
                    None => key,
                };
                let mut then = vec![TxnOp::put(key, "", Some(PutOptions::new().with_lease(lease)))];
                if let Some(queue) = queue {
                    then.push(TxnOp::get(queue, Some(GetOptions::new().with_prefix())));
                }
                let txn = Txn::new().when([Compare::create_revision(key, CompareOp::Equal, 0)]).and_then(then);
                let answer = bounded("txn", client.txn(txn)).await;
                assert!(answer.succeeded(), "the raw key was already there");
                let deleted = bounded("delete", client.delete(key, None)).await;
                assert_eq!(deleted.deleted(), 1, "the raw key was not there to delete");
            }
            start.elapsed().as_nanos() as f64 / iters as f64
        })
    }

    /// Leaves `count` deleted keys under `prefix`: what as many released requests leave
    /// until the cluster is compacted (etcd keeps a deleted key in its index till then).
    fn seed_deleted(&mut self, prefix: &str, count: usize) {
        let client = &mut self.client;
        self.rt.block_on(async {
            let keys: Vec<String> = (0..count).map(|i| format!("{prefix}{:016x}/{i:016x}", 0)).collect();
            // etcd takes at most 128 operations per Txn by default.
            for chunk in keys.chunks(128) {
                let puts: Vec<TxnOp> = chunk.iter().map(|key| TxnOp::put(key.as_str(), "", None)).collect();
                bounded("seeding txn", client.txn(Txn::new().and_then(puts))).await;
            }
            let deleted =
                bounded("seeding delete", client.delete(prefix, Some(DeleteOptions::new().with_prefix()))).await;
            assert_eq!(deleted.deleted(), count as i64, "seeding left other keys under {prefix}");
        });
    }

    /// ns per cycle of `iters` { Lock(name, lease); Unlock }.
    fn lock_rpc_cycles(&mut self, iters: u64, name: &str) -> f64 {
        let (client, lease) = (&mut self.client, self.lease);
        self.rt.block_on(async {
            let start = Instant::now();
            for _ in 0..iters {
                let locked = bounded("lock", client.lock(name, Some(LockOptions::new().with_lease(lease)))).await;
                bounded("unlock", client.unlock(locked.key())).await;
            }
            start.elapsed().as_nanos() as f64 / iters as f64
        })
    }
}

/// The raw client on a runtime of a thread of its own, as the scope's is: each call is
/// sent there and waited for with a thread park (the cost of that hop, without latchkey).
struct Hop {
    handle: tokio::runtime::Handle,
    client: Client,
    lease: i64,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Hop {
    fn start(config: &Config) -> Hop {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let config = config.clone();
        std::thread::spawn(move || {
            let rt = runtime();
            rt.block_on(async {
                let mut client = connect(&config).await;
                let lease = bounded("lease grant", client.lease_grant(RAW_LEASE_TTL, None)).await.id();
                ready_tx.send((tokio::runtime::Handle::current(), client, lease)).expect("the bench is gone");
                let _ = stop_rx.await;
            });
        });
        let (handle, client, lease) = ready_rx.recv().expect("the hop thread failed");
        Hop { handle, client, lease, _stop: stop_tx }
    }

    fn call<T: Send + 'static>(&self, work: impl std::future::Future<Output = T> + Send + 'static) -> T {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.handle.spawn(async move {
            let _ = tx.send(work.await);
        });
        rx.blocking_recv().expect("the hop thread is gone")
    }

    /// As [`Raw::txn_cycles`] with a queue, each of the two calls through the hop.
    fn txn_cycles(&self, iters: u64, queue: &str) -> f64 {
        let start = Instant::now();
        for i in 0..iters {
            let key = format!("{queue}{i:016x}");
            let (mut client, lease, queue, k) = (self.client.clone(), self.lease, queue.to_string(), key.clone());
            let answer = self.call(async move {
                let then = [
                    TxnOp::put(k.as_str(), "", Some(PutOptions::new().with_lease(lease))),
                    TxnOp::get(queue, Some(GetOptions::new().with_prefix())),
                ];
                let txn = Txn::new().when([Compare::create_revision(k.as_str(), CompareOp::Equal, 0)]).and_then(then);
                bounded("txn", client.txn(txn)).await
            });
            assert!(answer.succeeded(), "the raw key was already there");
            let mut client = self.client.clone();
            let deleted = self.call(async move { bounded("delete", client.delete(key, None)).await });
            assert_eq!(deleted.deleted(), 1, "the raw key was not there to delete");
        }
        start.elapsed().as_nanos() as f64 / iters as f64
    }
}

impl Drop for Hop {
    fn drop(&mut self) {
        let (mut client, lease) = (self.client.clone(), self.lease);
        let _ =
            self.call(async move { tokio::time::timeout(Duration::from_secs(2), client.lease_revoke(lease)).await });
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        let (client, lease) = (&mut self.client, self.lease);
        let _ =
            self.rt.block_on(async { tokio::time::timeout(Duration::from_secs(2), client.lease_revoke(lease)).await });
    }
}

/// `etcd/uncontended/*`: one acquire and its release, nobody else on the name.
///
/// Each round of ours takes a name of its own, and so does each round of the peers that
/// send latchkey's calls: every request of latchkey is a new key, and etcd keeps a deleted
/// key in its index until the cluster is compacted, so that the queue read of a name slows
/// down with the requests it has seen since. The last row measures that.
fn uncontended(emit: &dyn Fn(Row), target: &Target) {
    let scope = Scope::open(&target.url).expect("cannot open the etcd scope");
    let mut round = 0;
    let mut ours = || {
        round += 1;
        let mutex = scope.mutex(&target.name(&format!("uncontended/{round}"))).expect("cannot open the mutex");
        per_op(UNCONTENDED_ITERS, || mutex.lock_blocking().unwrap().release().unwrap())
    };
    let mut raw = Raw::with_lease(&target.config, RAW_LEASE_TTL);
    let (key, lock) = (target.raw_key("uncontended/key"), target.raw_key("rpc"));
    let case = "etcd/uncontended/mutex";

    let (o, p) = alternate(&mut ours, || raw.txn_cycles(UNCONTENDED_ITERS, &key, None));
    emit(row(case, o, RAW_TXN, p));
    let (o, p) = alternate(&mut ours, || raw.lock_rpc_cycles(UNCONTENDED_ITERS, &lock));
    emit(row(case, o, LOCK_RPC, p));
    let mut raw_round = 0;
    let (o, p) = alternate(&mut ours, || {
        raw_round += 1;
        raw.txn_cycles(UNCONTENDED_ITERS, &key, Some(&target.raw_key(&format!("queue/{raw_round}/"))))
    });
    emit(row(case, o, RAW_TXN_READ, p));
    let mut by_name_round = 0;
    let by_name = || {
        by_name_round += 1;
        let name = target.name(&format!("by-name/{by_name_round}"));
        per_op(UNCONTENDED_ITERS, || scope.lock_blocking(&name).unwrap().release().unwrap())
    };
    let (o, p) = alternate(by_name, || raw.txn_cycles(UNCONTENDED_ITERS, &key, None));
    emit(row("etcd/uncontended/by-name", o, RAW_TXN, p));

    let hop = Hop::start(&target.config);
    let mut hop_round = 0;
    let (o, p) = alternate(&mut ours, || {
        hop_round += 1;
        hop.txn_cycles(UNCONTENDED_ITERS, &target.raw_key(&format!("hop/{hop_round}/")))
    });
    emit(row(case, o, RAW_HOP, p));
    drop(hop);

    // One name whose queue holds DELETED_REQUESTS deleted keys (and more as it goes).
    let name = target.name("uncontended/old");
    raw.seed_deleted(&latchkey_etcd::keys::queue_prefix(&target.config.prefix, &name), DELETED_REQUESTS);
    let mutex = scope.mutex(&name).expect("cannot open the mutex");
    let old = || per_op(UNCONTENDED_ITERS, || mutex.lock_blocking().unwrap().release().unwrap());
    let (o, p) = alternate(old, || raw.txn_cycles(UNCONTENDED_ITERS, &key, None));
    emit(row(&format!("{case}/after-{DELETED_REQUESTS}-requests"), o, RAW_TXN, p));
    drop(raw);
    scope.close_blocking().expect("cannot close the etcd scope");
}
