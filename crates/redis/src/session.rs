//! The scope's session: an id, and for each name it has requests on, a mark of until when
//! it lives there (server time), renewed by one keep-alive for every name of the scope.
//!
//! The session knows when it lapses without asking: each renewal that every name answered
//! extends its validity to when the renewal was *sent* plus the TTL, less a margin, never
//! later than the server's own marks (set on the server's clock when the script ran, after
//! the send). Past that without a renewal, or when a name answers that the session had
//! lapsed there, the session is lost for good: `lost()` fires and a new session is made for
//! new requests. A reconnect alone (a killed connection) loses nothing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use latchkey_remote::Life;
use redis::Value;

use crate::connection::Connection;
use crate::direct::{Direct, Failure};
use crate::keys::NameKeys;
use crate::requests::{Renewal, Requests};
use crate::scripts::Scripts;

/// One session and what is known of its life.
pub(crate) struct Session {
    /// The session's id: random, 16 hex digits.
    pub id: String,
    pub connection: Connection,
    pub scripts: Arc<Scripts>,
    ttl: Duration,
    numbers: AtomicU64,
    life: Life,
    /// The session's requests by name: what the keep-alive renews and checks.
    requests: Mutex<Requests>,
}

impl Session {
    /// A new session on `connection`, valid from `sent` (just before its first use).
    pub fn new(connection: Connection, scripts: Arc<Scripts>, ttl: Duration) -> std::io::Result<Arc<Session>> {
        let session = Arc::new(Session {
            id: random_id()?,
            connection,
            scripts,
            ttl,
            numbers: AtomicU64::new(0),
            life: Life::new(Instant::now() + validity(ttl)),
            requests: Mutex::default(),
        });
        tokio::spawn(keep_alive(session.clone()));
        Ok(session)
    }

    /// The TTL in ms, as the scripts take it.
    pub fn ttl_ms(&self) -> String {
        self.ttl.as_millis().to_string()
    }

    /// A number for a new request of this session, never used before.
    pub fn next_number(&self) -> u64 {
        self.numbers.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// The id of request `n` of this session.
    pub fn request_id(&self, n: u64) -> String {
        format!("{}:{n}", self.id)
    }

    /// Whether the session is lost: cheap, and true from the instant its validity ends.
    pub fn is_lost(&self) -> bool {
        self.life.is_lost()
    }

    fn valid_until(&self) -> Instant {
        self.life.valid_until()
    }

    /// Marks the session lost.
    pub fn mark_lost(&self) {
        self.life.mark_lost();
    }

    /// Completes once the session is lost; on any executor.
    pub async fn lost(&self) {
        self.life.lost().await
    }

    /// The session's requests.
    pub fn requests(&self) -> MutexGuard<'_, Requests> {
        self.requests.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records that a script sent at `sent`, which renewed the session's mark on the name of
    /// `keys`, answered that request `n` is queued there.
    pub fn queued(&self, keys: &NameKeys, n: u64, sent: Instant) {
        if let Some(renewed) = self.requests().added(keys, n, Some(sent)) {
            self.life.cap(renewed + validity(self.ttl));
        }
    }

    /// Deletes request `n` on the name of `keys` once (and publishes if anyone is left);
    /// `Ok(true)` if it was there.
    pub async fn delete(&self, keys: &NameKeys, n: u64) -> Result<bool, redis::RedisError> {
        self.requests().removing(keys, n);
        let found: i64 = self.release(keys, n).invoke_async(&mut self.connection.clone()).await?;
        self.requests().removed(keys, n, found == 1);
        Ok(found == 1)
    }

    /// [`delete`](Self::delete) on the caller's thread.
    pub fn delete_direct(&self, direct: &Direct, keys: &NameKeys, n: u64) -> Result<bool, Failure> {
        self.requests().removing(keys, n);
        let answer = direct.invoke(&self.release(keys, n), None)?;
        let found: i64 = redis::from_redis_value(&answer).map_err(|error| Failure { error, stale: false })?;
        self.requests().removed(keys, n, found == 1);
        Ok(found == 1)
    }

    /// The release script for request `n` on the name of `keys`.
    fn release(&self, keys: &NameKeys, n: u64) -> redis::ScriptInvocation<'_> {
        let mut invocation = self.scripts.release.prepare_invoke();
        for key in keys.script_keys() {
            invocation.key(key);
        }
        invocation.arg(self.request_id(n)).arg(&keys.channel);
        invocation
    }

    /// Deletes every request of the session (once it is lost: its holds are lost already,
    /// and others need not wait for them to lapse).
    pub async fn give_back(&self) {
        let all = self.requests().all();
        for (keys, numbers) in all {
            for n in numbers {
                if let Err(e) = self.delete(&keys, n).await {
                    tracing::debug!(target: "latchkey", session = self.id, "giving back a lost request failed: {e}");
                }
            }
        }
    }
}

/// How long after a renewal is sent the session counts as valid: the TTL less a
/// twentieth, at least 50 ms (clocks that run at different rates, a paused process).
fn validity(ttl: Duration) -> Duration {
    ttl.saturating_sub((ttl / 20).max(Duration::from_millis(50)))
}

/// How soon the keep-alive tries again after a renewal failed.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// What a name answered to a renewal.
#[derive(Debug, PartialEq, Eq)]
enum Renewed {
    /// The session lives there; these requests that had to be there were not.
    Yes { missing: Vec<u64> },
    /// The session had lapsed there (its requests there are gone).
    Lapsed,
}

impl Renewed {
    fn parse(value: Value) -> Renewed {
        let words: Vec<String> = redis::from_redis_value(&value).unwrap_or_default();
        match words.first().map(String::as_str) {
            Some("renewed") => Renewed::Yes { missing: words[1..].iter().filter_map(|n| n.parse().ok()).collect() },
            _ => Renewed::Lapsed,
        }
    }
}

/// Renews the session on every name of `renewals`, all sent at once (the connection
/// pipelines them; on a cluster each goes to its name's node).
async fn renew(session: &Session, renewals: &[Renewal]) -> Result<Vec<Renewed>, redis::RedisError> {
    if renewals.is_empty() {
        let _: String = redis::cmd("PING").query_async(&mut session.connection.clone()).await?;
        return Ok(Vec::new());
    }
    let numbers = |ns: &[u64]| ns.iter().map(u64::to_string).collect::<Vec<_>>().join(" ");
    let calls = renewals.iter().map(|renewal| {
        let mut invocation = session.scripts.renew.prepare_invoke();
        for key in renewal.keys.script_keys() {
            invocation.key(key);
        }
        invocation.arg(&session.id).arg(session.ttl_ms()).arg(numbers(&renewal.queued)).arg(numbers(&renewal.ghosts));
        let mut connection = session.connection.clone();
        async move { invocation.invoke_async::<Value>(&mut connection).await.map(Renewed::parse) }
    });
    futures_util::future::join_all(calls).await.into_iter().collect()
}

/// Renews `session` on every name it has requests on, every third of its TTL, until it is
/// lost. A name that answers that the session had lapsed there, or that a request the
/// session holds or awaits there is gone, loses the session; its requests are then given
/// back.
async fn keep_alive(session: Arc<Session>) {
    let interval = session.ttl / 3;
    loop {
        let sent = Instant::now();
        let renewals = session.requests().renewals();
        let remaining = session.valid_until().saturating_duration_since(Instant::now());
        let mut next = sent + interval;
        match tokio::time::timeout(remaining, renew(&session, &renewals)).await {
            Ok(Ok(answers)) => {
                let mut requests = session.requests();
                let mut lost = false;
                for (renewal, answer) in renewals.iter().zip(answers) {
                    let queue = &renewal.keys.queue;
                    // Only what is still queued counts: a request released meanwhile is gone
                    // as it should be.
                    match answer {
                        Renewed::Yes { missing } => {
                            lost |= missing.iter().any(|n| requests.is_queued(queue, *n));
                            requests.renewed(queue, sent);
                        }
                        Renewed::Lapsed => {
                            lost |= renewal.queued.iter().any(|n| requests.is_queued(queue, *n));
                            requests.lapsed(queue);
                        }
                    }
                }
                if lost {
                    drop(requests);
                    tracing::warn!(target: "latchkey", session = session.id, "the Redis session had lapsed: its locks are lost");
                    session.mark_lost();
                    break;
                }
                session.life.extend_to(requests.sure_since(sent) + validity(session.ttl));
            }
            Ok(Err(e)) => {
                // Most often a connection killed or dropped: the connection manager connects
                // again at once; try again soon rather than a third of a TTL later.
                tracing::debug!(target: "latchkey", session = session.id, "a Redis renewal failed: {e}");
                next = next.min(Instant::now() + RETRY_PAUSE);
            }
            Err(_) => {}
        }
        if session.is_lost() {
            tracing::warn!(target: "latchkey", session = session.id, "the Redis session lapsed: its locks are lost");
            break;
        }
        tokio::select! {
            () = tokio::time::sleep_until(next.into()) => {}
            () = session.lost() => break,
        }
    }
    session.give_back().await;
}

/// 16 random hex digits.
fn random_id() -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 8];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(format!("{:016x}", u64::from_le_bytes(bytes)))
}
