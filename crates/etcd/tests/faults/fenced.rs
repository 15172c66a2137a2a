//! A raw etcd client of the tests' own, to look at the keys a scope leaves, and the
//! fenced resources the tests keep in etcd.

use std::time::{Duration, Instant};

use etcd_client::{Client, Compare, CompareOp, GetOptions, Txn, TxnOp};

use crate::support::PATIENCE;

/// A blocking etcd client of its own (with its own small runtime), to look at the keys a
/// scope left and to keep fenced resources. Not for use inside another runtime: there,
/// call the async functions of this module with a [`Client`].
pub struct Etcd {
    runtime: tokio::runtime::Runtime,
    client: Client,
}

impl Etcd {
    /// Connects to `endpoints` (`127.0.0.1:port`, ...).
    pub fn connect(endpoints: &[String]) -> Etcd {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
        let client = runtime.block_on(connect(endpoints));
        Etcd { runtime, client }
    }

    /// Runs `f` with the client on this client's runtime.
    pub fn run<T, F: std::future::Future<Output = T>>(&self, f: impl FnOnce(Client) -> F) -> T {
        self.runtime.block_on(f(self.client.clone()))
    }

    /// The value of `key`, if any.
    pub fn get(&self, key: &str) -> Option<String> {
        self.run(|client| get(client, key.to_string()))
    }

    /// Puts `key` = `value`.
    pub fn put(&self, key: &str, value: &str) {
        self.run(|client| {
            let (key, value) = (key.to_string(), value.to_string());
            async move {
                retry("put", &client, |mut c| {
                    let (key, value) = (key.clone(), value.clone());
                    async move { c.put(key, value, None).await }
                })
                .await
            }
        });
    }
}

/// Connects a client to `endpoints`.
pub async fn connect(endpoints: &[String]) -> Client {
    Client::connect(endpoints, None).await.expect("connect a raw etcd client")
}

/// Every key under `prefix`, in order.
pub async fn keys(client: Client, prefix: String) -> Vec<String> {
    let options = GetOptions::new().with_prefix().with_keys_only();
    let answer = retry("get", &client, |mut c| {
        let (prefix, options) = (prefix.clone(), options.clone());
        async move { c.get(prefix, Some(options)).await }
    })
    .await;
    answer.kvs().iter().map(|kv| String::from_utf8_lossy(kv.key()).into_owned()).collect()
}

/// The value of `key`, if any.
pub async fn get(client: Client, key: String) -> Option<String> {
    let answer = retry("get", &client, |mut c| {
        let key = key.clone();
        async move { c.get(key, None).await }
    })
    .await;
    answer.kvs().first().map(|kv| String::from_utf8_lossy(kv.value()).into_owned())
}

/// Makes an etcd call until it succeeds (a leader election, a member killed), at most
/// [`PATIENCE`]; the calls given are idempotent or checked by their caller. A call to a
/// killed member can hang rather than fail: the first attempts get little time.
async fn retry<T, F: std::future::Future<Output = Result<T, etcd_client::Error>>>(
    what: &str,
    client: &Client,
    mut call: impl FnMut(Client) -> F,
) -> T {
    let (began, mut patience) = (Instant::now(), Duration::from_millis(300));
    loop {
        let outcome = tokio::time::timeout(patience, call(client.clone())).await;
        patience = (patience * 2).min(Duration::from_secs(2));
        match outcome {
            Ok(Ok(answer)) => return answer,
            Ok(Err(e)) if began.elapsed() > PATIENCE => panic!("etcd {what} failed for {PATIENCE:?}: {e}"),
            Err(_) if began.elapsed() > PATIENCE => panic!("etcd {what} got no answer for {PATIENCE:?}"),
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// A resource in etcd that remembers the highest fencing token that wrote it and rejects
/// writes with lower ones, in one transaction: `{prefix}/token` (the token, 16 hex digits,
/// so that byte order is number order), `{prefix}/value`, and `{prefix}/writes/{token}`,
/// one record per accepted write (the resource's own log, which a killed writer cannot
/// leave out).
#[derive(Clone, Debug)]
pub struct Fence {
    prefix: String,
}

/// What a fenced write came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Write {
    /// Accepted: no higher token had written.
    Accepted,
    /// Rejected: a token at least as high had written.
    Rejected,
}

impl Fence {
    /// The resource under `prefix`.
    pub fn new(prefix: &str) -> Fence {
        Fence { prefix: prefix.to_string() }
    }

    fn token_key(&self) -> String {
        format!("{}/token", self.prefix)
    }

    /// The key of the value.
    pub fn value_key(&self) -> String {
        format!("{}/value", self.prefix)
    }

    fn writes(&self) -> String {
        format!("{}/writes/", self.prefix)
    }

    /// Creates the resource: token 0, value `0`.
    pub fn init(&self, etcd: &Etcd) {
        etcd.put(&self.token_key(), &format!("{:016x}", 0));
        etcd.put(&self.value_key(), "0");
    }

    /// Writes `value` with `token` if every earlier write had a lower token: one write per
    /// token (per grant). A write whose answer was lost is retried; it then finds its own
    /// record.
    pub async fn write(&self, client: Client, token: u64, value: &str) -> Write {
        self.write_below(client, token, token, value).await
    }

    /// Writes `value` with `token` if no earlier write had a higher token: a holder may
    /// write many times with its token.
    pub async fn rewrite(&self, client: Client, token: u64, value: &str) -> Write {
        self.write_below(client, token, token + 1, value).await
    }

    /// Writes `value` with `token` if every earlier write had a token below `bound`.
    async fn write_below(&self, client: Client, token: u64, bound: u64, value: &str) -> Write {
        let (mine, record) = (format!("{token:016x}"), format!("{}{token:016x}", self.writes()));
        let bound = format!("{bound:016x}");
        let txn = Txn::new().when([Compare::value(self.token_key(), CompareOp::Less, bound.as_str())]).and_then([
            TxnOp::put(self.token_key(), mine.as_str(), None),
            TxnOp::put(self.value_key(), value, None),
            TxnOp::put(record.as_str(), value, None),
        ]);
        let answer = retry("fenced write", &client, |mut c| {
            let txn = txn.clone();
            async move { c.txn(txn).await }
        })
        .await;
        if answer.succeeded() || get(client, record).await.as_deref() == Some(value) {
            Write::Accepted
        } else {
            Write::Rejected
        }
    }

    /// The value now.
    pub async fn value(&self, client: Client) -> String {
        get(client, self.value_key()).await.expect("the fenced value exists")
    }

    /// The accepted writes: (token, value), in token order.
    pub fn records(&self, etcd: &Etcd) -> Vec<(u64, String)> {
        let writes = self.writes();
        etcd.run(|client| async move {
            let options = GetOptions::new().with_prefix();
            let answer = retry("get", &client, |mut c| {
                let (writes, options) = (writes.clone(), options.clone());
                async move { c.get(writes, Some(options)).await }
            })
            .await;
            answer
                .kvs()
                .iter()
                .map(|kv| {
                    let key = String::from_utf8_lossy(kv.key());
                    let token = u64::from_str_radix(key.rsplit('/').next().unwrap_or(""), 16).expect("a token");
                    (token, String::from_utf8_lossy(kv.value()).into_owned())
                })
                .collect()
        })
    }
}

/// A fenced counter's step: reads the value, waits `between`, and unless `lost()` says
/// the hold is lost by then, writes value + 1 with `token`. What the write came to and the
/// value read; `None` if the hold was lost before the write.
pub async fn increment(
    fence: &Fence,
    client: Client,
    token: u64,
    between: Duration,
    lost: impl Fn() -> bool,
) -> Option<(Write, u64)> {
    let read: u64 = fence.value(client.clone()).await.parse().expect("a counter");
    tokio::time::sleep(between).await;
    if lost() {
        return None;
    }
    Some((fence.write(client, token, &(read + 1).to_string()).await, read))
}

/// Checks a fenced counter after the run: every accepted write wrote the value it read
/// plus one, no two read the same value (no lost update), and the counter is their number.
/// Returns the number of accepted writes.
#[track_caller]
pub fn check_counter(fence: &Fence, etcd: &Etcd) -> usize {
    let records = fence.records(etcd);
    let counter: usize = etcd.get(&fence.value_key()).expect("the counter").parse().expect("a number");
    let mut written: Vec<usize> = records.iter().map(|(_, v)| v.parse().expect("a number")).collect();
    written.sort_unstable();
    let lost: Vec<usize> = written.windows(2).filter(|w| w[0] == w[1]).map(|w| w[0]).collect();
    assert!(lost.is_empty(), "lost updates: two accepted writes wrote each of {lost:?} (records {records:?})");
    assert_eq!(counter, records.len(), "the counter is not the number of accepted writes: {records:?}");
    assert_eq!(written, (1..=counter).collect::<Vec<_>>(), "the accepted writes are not 1..={counter}");
    records.len()
}
