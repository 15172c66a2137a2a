//! What every lock of an etcd scope shares: the client, the scope's thread, the session,
//! and the etcd calls the locks are made of. Every function here runs on the scope's thread.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{
    Client, Compare, CompareOp, DeleteOptions, EventType, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse,
    TxnResponse, WatchFilterType, WatchOptions, WatchStream, Watcher,
};
use latchkey_model::{Error, ErrorKind, Result};

use crate::queue::{Ask, Queue, Request};
use crate::session::{keep_alive, Session};
use crate::Config;
use latchkey_remote::Driver;

/// The state of one scope, shared by its locks and guards.
pub(crate) struct Shared {
    pub url: String,
    pub config: Config,
    /// This machine's name, recorded in each request for `inspect`.
    pub host: String,
    pub client: Client,
    pub driver: Arc<Driver>,
    session: tokio::sync::Mutex<Option<Arc<Session>>>,
    closed: AtomicBool,
}

/// When a key whose put was sent more than once is deleted again: past the time any of
/// its attempts could still commit (an attempt given up on may be in raft's log).
const LATE_DELETE: Duration = Duration::from_secs(10);

/// How long one etcd call may take before it counts as failed.
fn call_timeout(config: &Config) -> Duration {
    config.ttl.min(Duration::from_secs(5))
}

impl Shared {
    /// Connects to the cluster and starts the first session. Runs on the scope's thread.
    pub async fn connect(url: String, config: Config, driver: Arc<Driver>) -> Result<Shared> {
        let mut options = etcd_client::ConnectOptions::new()
            .with_connect_timeout(call_timeout(&config))
            .with_keep_alive(Duration::from_secs(1), call_timeout(&config))
            .with_keep_alive_while_idle(true)
            // A member cut off from the others fails calls and watches at once, rather than
            // answering from a minority (a watch there would never see a deletion).
            .with_require_leader(true);
        if let Some((user, password)) = &config.credentials {
            options = options.with_user(user.clone(), password.clone());
        }
        if let Some(ca) = &config.tls {
            options = options.with_tls(tls_options(ca.as_deref()).map_err(|e| e.with_scope(&url))?);
        }
        let (endpoints, scope) = (config.endpoints.join(","), url.clone());
        let unreachable = move |e: String| {
            Error::new(ErrorKind::Unavailable, format!("cannot reach etcd at {endpoints}: {e}")).with_scope(&scope)
        };
        let client = tokio::time::timeout(call_timeout(&config), Client::connect(&config.endpoints, Some(options)))
            .await
            .map_err(|_| unreachable("no answer".into()))?
            .map_err(|e| unreachable(e.to_string()))?;
        let host =
            std::fs::read_to_string("/proc/sys/kernel/hostname").map_or_else(|_| "?".into(), |h| h.trim().into());
        let shared = Shared {
            url,
            config,
            host,
            client,
            driver,
            session: tokio::sync::Mutex::new(None),
            closed: AtomicBool::new(false),
        };
        shared.session().await.map_err(|e| unreachable(e.message().to_string()))?;
        Ok(shared)
    }

    /// An error of this scope.
    pub fn error(&self, kind: ErrorKind, why: impl Into<String>, name: Option<&str>) -> Error {
        let error = Error::new(kind, why).with_scope(&self.url);
        match name {
            Some(name) => error.with_name(name),
            None => error,
        }
    }

    fn failed(&self, what: &str, e: impl std::fmt::Display) -> Error {
        self.error(ErrorKind::Unavailable, format!("etcd {what} failed: {e}"), None)
    }

    /// The live session, made anew if the last one was lost.
    pub async fn session(&self) -> Result<Arc<Session>> {
        if self.closed.load(Ordering::Acquire) {
            return Err(self.error(ErrorKind::Closed, "the scope was closed", None));
        }
        let mut current = self.session.lock().await;
        if self.closed.load(Ordering::Acquire) {
            return Err(self.error(ErrorKind::Closed, "the scope was closed", None));
        }
        if let Some(session) = current.as_ref().filter(|s| !s.is_lost()) {
            return Ok(session.clone());
        }
        let ttl = self.config.ttl.as_secs() as i64;
        let sent = Instant::now();
        let mut client = self.client.clone();
        let granted = tokio::time::timeout(call_timeout(&self.config), client.lease_grant(ttl, None))
            .await
            .map_err(|_| self.failed("lease grant", "no answer"))?
            .map_err(|e| self.failed("lease grant", e))?;
        let session = Arc::new(Session::new(granted.id(), Duration::from_secs(granted.ttl() as u64), sent));
        self.driver.spawn(keep_alive(self.client.clone(), session.clone()));
        if let Some(old) = current.replace(session.clone()) {
            self.driver.spawn(revoke(self.client.clone(), old.lease));
        }
        Ok(session)
    }

    /// Ends the session (its keys go with its lease) and refuses new work.
    pub async fn close(&self) {
        self.closed.store(true, Ordering::Release);
        if let Some(session) = self.session.lock().await.take() {
            session.mark_lost();
            revoke(self.client.clone(), session.lease).await;
        }
    }

    /// The lease of the current session, for a last revoke when the scope is dropped.
    pub fn current_lease(&self) -> Option<i64> {
        self.session.try_lock().ok()?.as_ref().map(|s| s.lease)
    }

    /// Makes `call`, and again after a failure that may pass (a leader election, a
    /// reconnect) while `session` is valid, or for a few seconds without one: the calls
    /// made with it are idempotent. A lease the server no longer knows loses `session`.
    async fn retrying<T, F: std::future::Future<Output = std::result::Result<T, etcd_client::Error>>>(
        &self,
        what: &str,
        session: Option<&Session>,
        mut call: impl FnMut(Client) -> F,
    ) -> Result<T> {
        if self.closed.load(Ordering::Acquire) {
            return Err(self.error(ErrorKind::Closed, "the scope was closed", None));
        }
        let mut backoff = Duration::from_millis(20);
        let give_up = Instant::now() + call_timeout(&self.config);
        // A call sent to a member that just died hangs rather than fails: the first
        // attempts are given less time, and later ones more, up to the call timeout.
        let mut patience = Duration::from_secs(1).min(call_timeout(&self.config));
        loop {
            let outcome = tokio::time::timeout(patience, call(self.client.clone())).await;
            patience = (patience * 2).min(call_timeout(&self.config));
            let e = match outcome {
                Ok(Ok(answer)) => return Ok(answer),
                Ok(Err(e)) if e.to_string().contains("lease not found") => {
                    if let Some(session) = session {
                        session.mark_lost();
                    }
                    return Err(self.error(ErrorKind::HandleLost, "the session's lease expired", None));
                }
                Ok(Err(e)) if !transient(&e) => return Err(self.failed(what, e)),
                Ok(Err(e)) => e.to_string(),
                Err(_) => "no answer".to_string(),
            };
            let retry = match session {
                Some(session) => !session.is_lost(),
                None => Instant::now() < give_up,
            };
            if !retry {
                return Err(self.failed(what, e));
            }
            tracing::debug!(target: "latchkey", "etcd {what} failed, retrying: {e}");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }

    /// Sends `txn`, which puts the request key `key` on `session`'s lease, retrying as
    /// [`retrying`](Shared::retrying) does; a put sent more than once is recorded as
    /// unsure (see [`delete`](Shared::delete)).
    async fn put_txn(&self, what: &str, session: &Session, key: &str, txn: impl Fn() -> Txn) -> Result<TxnResponse> {
        let calls = std::sync::atomic::AtomicU32::new(0);
        self.retrying(what, Some(session), |mut client| {
            if calls.fetch_add(1, Ordering::Relaxed) > 0 {
                session.mark_unsure(key);
            }
            let txn = txn();
            async move { client.txn(txn).await }
        })
        .await
    }

    /// Puts the request `key` (if it is not there yet) on `session`'s lease and counts the
    /// queue it joined, in one transaction. A request alone in its queue holds (nothing
    /// was created before it), and is the whole queue read; otherwise the queue is read.
    pub async fn enqueue(&self, session: &Session, queue: &str, key: &str, ask: &Ask) -> Result<Queue> {
        let value = ask.encode();
        let count = || TxnOp::get(queue, Some(GetOptions::new().with_prefix().with_count_only()));
        let txn = || {
            Txn::new()
                .when([Compare::create_revision(key, CompareOp::Equal, 0)])
                .and_then([TxnOp::put(key, value.as_str(), Some(PutOptions::new().with_lease(session.lease))), count()])
                .or_else([count()])
        };
        let answer = self.put_txn("enqueue", session, key, txn).await?;
        if answer.succeeded() && first_get(&answer).is_some_and(|get| get.count() == 1) {
            // Put by this transaction, so created at its revision.
            let alone = Request {
                key: key.to_string(),
                create_revision: answer.header().map_or(0, |h| h.revision()),
                lease: session.lease,
                ask: Some(ask.clone()),
            };
            return Ok(Queue::new(vec![alone]));
        }
        self.read_queue(queue).await
    }

    /// Reads the key-values under `prefix`.
    pub async fn read(&self, prefix: &str) -> Result<Vec<etcd_client::KeyValue>> {
        let options = GetOptions::new().with_prefix();
        let mut answer = self
            .retrying("read", None, |mut client| {
                let options = options.clone();
                async move { client.get(prefix, Some(options)).await }
            })
            .await?;
        Ok(answer.take_kvs())
    }

    /// Reads the queue under `queue`.
    pub async fn read_queue(&self, queue: &str) -> Result<Queue> {
        Ok(queue_of(self.read(queue).await?))
    }

    /// Deletes `key`, a request of `session`, retrying for as long as the session lives (a
    /// key left behind would be held as long as the session, which outlives a short cut).
    /// Whether it was there; a retry after a lost answer counts as there.
    pub async fn delete(self: &Arc<Self>, session: &Arc<Session>, key: &str) -> Result<bool> {
        let attempts = std::sync::atomic::AtomicU32::new(0);
        let answer = self
            .retrying("delete", Some(session), |mut client| {
                attempts.fetch_add(1, Ordering::Relaxed);
                async move { client.delete(key, None::<DeleteOptions>).await }
            })
            .await?;
        // A put sent more than once may have an attempt that commits after this delete:
        // delete once more when any attempt must have ended.
        if session.take_unsure(key) {
            let (shared, session, key) = (self.clone(), session.clone(), key.to_string());
            self.driver.spawn(async move {
                tokio::time::sleep(LATE_DELETE).await;
                if !session.is_lost() {
                    let delete = |mut client: Client| {
                        let key = key.clone();
                        async move { client.delete(key, None::<DeleteOptions>).await }
                    };
                    let _ = shared.retrying("late delete", Some(&session), delete).await;
                }
            });
        }
        Ok(answer.deleted() > 0 || attempts.load(Ordering::Relaxed) > 1)
    }

    /// In one transaction, if `old` still has create revision `revision`: deletes it and
    /// puts `new` on `session`'s lease (a request moved to the back of the queue). Then
    /// reads the queue. `None` if `old` was gone.
    pub async fn requeue(
        &self,
        session: &Session,
        queue: &str,
        (old, revision): (&str, i64),
        new: &str,
        ask: &Ask,
    ) -> Result<Option<Queue>> {
        let value = ask.encode();
        // A retry after a commit whose answer was lost finds `old` gone and `new` there.
        let txn = || {
            Txn::new()
                .when([Compare::create_revision(old, CompareOp::Equal, revision)])
                .and_then([
                    TxnOp::delete(old, None),
                    TxnOp::put(new, value.as_str(), Some(PutOptions::new().with_lease(session.lease))),
                    TxnOp::get(queue, Some(GetOptions::new().with_prefix())),
                ])
                .or_else([TxnOp::get(queue, Some(GetOptions::new().with_prefix()))])
        };
        let answer = self.put_txn("requeue", session, new, txn).await?;
        let queue = queue_of(first_get(&answer).map(|get| get.kvs().to_vec()).unwrap_or_default());
        let moved = answer.succeeded() || queue.requests().iter().any(|r| r.key == new);
        Ok(moved.then_some(queue))
    }

    /// A watch of the deletions under `prefix` from now on.
    pub async fn watch_deletes(&self, prefix: &str) -> Result<(Watcher, WatchStream)> {
        let options = WatchOptions::new().with_prefix().with_filters([WatchFilterType::NoPut]);
        let mut client = self.client.clone();
        tokio::time::timeout(call_timeout(&self.config), client.watch(prefix, Some(options)))
            .await
            .map_err(|_| self.failed("watch", "no answer"))?
            .map_err(|e| self.failed("watch", e))
    }
}

/// What a watch of deletions saw.
pub(crate) enum Seen {
    /// These keys were deleted, in this order: the caller applies them to what it read.
    Deleted(Vec<String>),
    /// The watch was just opened (at the current revision), or it ended: the caller reads
    /// again, so that nothing between its last read and the watch's start is missed.
    ReadAgain,
}

/// Waits for deletions seen by `watch` (opening it if there is none). Never a poll:
/// without events, it sleeps.
///
/// A watch is opened at the current revision, and the caller reads after it: a watch
/// opened *from* an older revision would see the same, but etcd serves such a watch from
/// a catch-up loop that runs every 100 ms (a third of hand-offs took 100 ms that way).
/// Once open, a watch has no gaps: the deletions it reports, applied to the read, are the
/// queue as it is (requests are only ever added after the ones already there).
pub(crate) async fn next_deletions(
    shared: &Shared,
    watch: &mut Option<(Watcher, WatchStream)>,
    prefix: &str,
) -> Result<Seen> {
    if watch.is_none() {
        *watch = Some(shared.watch_deletes(prefix).await?);
        return Ok(Seen::ReadAgain);
    }
    let (_, stream) = watch.as_mut().expect("opened above");
    loop {
        match stream.message().await {
            Ok(Some(answer)) if answer.canceled() || answer.compact_revision() > 0 => break,
            Ok(Some(answer)) => {
                let deleted: Vec<String> = answer
                    .events()
                    .iter()
                    .filter(|e| e.event_type() == EventType::Delete)
                    .filter_map(|e| e.kv().map(|kv| String::from_utf8_lossy(kv.key()).into_owned()))
                    .collect();
                if !deleted.is_empty() {
                    return Ok(Seen::Deleted(deleted));
                }
            }
            Ok(None) | Err(_) => break,
        }
    }
    // The watch is over: read again (whoever calls does) and watch anew from there.
    *watch = None;
    tokio::time::sleep(Duration::from_millis(20)).await;
    Ok(Seen::ReadAgain)
}

/// TLS that trusts the CA certificates (PEM) in the file `ca`, or the system's roots.
fn tls_options(ca: Option<&str>) -> Result<etcd_client::TlsOptions> {
    let Some(ca) = ca else {
        return Ok(etcd_client::TlsOptions::new().with_native_roots());
    };
    let pem = std::fs::read(ca).map_err(|e| {
        Error::new(ErrorKind::InvalidScope, format!("cannot read the CA file {ca:?} given with ca=: {e}"))
    })?;
    Ok(etcd_client::TlsOptions::new().ca_certificate(etcd_client::Certificate::from_pem(pem)))
}

/// Whether an etcd failure may pass by itself (a connection, a leader election).
fn transient(e: &etcd_client::Error) -> bool {
    use tonic::Code;
    match e {
        etcd_client::Error::GRpcStatus(status) => {
            matches!(
                status.code(),
                Code::Unavailable
                    | Code::DeadlineExceeded
                    | Code::Unknown
                    | Code::Aborted
                    | Code::Internal
                    | Code::Cancelled
            ) && !status.message().contains("too large")
        }
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        _ => false,
    }
}

/// The answer to the first read of a transaction.
fn first_get(answer: &TxnResponse) -> Option<etcd_client::GetResponse> {
    answer.op_responses().into_iter().find_map(|op| match op {
        TxnOpResponse::Get(get) => Some(get),
        _ => None,
    })
}

fn queue_of(kvs: Vec<etcd_client::KeyValue>) -> Queue {
    Queue::new(
        kvs.into_iter()
            .map(|kv| Request {
                key: String::from_utf8_lossy(kv.key()).into_owned(),
                create_revision: kv.create_revision(),
                lease: kv.lease(),
                ask: Ask::decode(kv.value()),
            })
            .collect(),
    )
}

/// Revokes `lease`, best effort: its keys go at once instead of at its expiry.
pub(crate) async fn revoke(mut client: Client, lease: i64) {
    match tokio::time::timeout(Duration::from_secs(2), client.lease_revoke(lease)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::debug!(target: "latchkey", lease, "revoking an etcd lease failed: {e}"),
        Err(_) => tracing::debug!(target: "latchkey", lease, "revoking an etcd lease got no answer"),
    }
}
