//! The scope's session: an id, and for each name it has requests on, a mark of until when
//! it lives there (server time), renewed by one keep-alive for every name of the scope.
//!
//! The session knows when it lapses without asking: each renewal that every name answered
//! extends its validity to when the renewal was *sent* plus the TTL, less a margin, never
//! later than the server's own marks (set on the server's clock when the script ran, after
//! the send). Past that without a renewal, or when a name answers that the session had
//! lapsed there, the session is lost for good: `lost()` fires and a new session is made for
//! new requests. A reconnect alone (a killed connection) loses nothing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use latchkey_remote::Life;
use redis::aio::ConnectionManager;

use crate::keys::NameKeys;
use crate::scripts::Scripts;

/// One session and what is known of its life.
pub(crate) struct Session {
    /// The session's id: random, 16 hex digits.
    pub id: String,
    pub connection: ConnectionManager,
    pub scripts: Arc<Scripts>,
    ttl: Duration,
    numbers: AtomicU64,
    life: Life,
    /// The names the session has requests on, with how many: what the keep-alive renews.
    names: Mutex<HashMap<String, (NameKeys, usize)>>,
}

impl Session {
    /// A new session on `connection`, valid from `sent` (just before its first use).
    pub fn new(connection: ConnectionManager, scripts: Arc<Scripts>, ttl: Duration) -> std::io::Result<Arc<Session>> {
        let session = Arc::new(Session {
            id: random_id()?,
            connection,
            scripts,
            ttl,
            numbers: AtomicU64::new(0),
            life: Life::new(Instant::now() + validity(ttl)),
            names: Mutex::default(),
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

    /// Whether the session is lost: cheap, and true from the instant its validity ends.
    pub fn is_lost(&self) -> bool {
        self.life.is_lost()
    }

    fn valid_until(&self) -> Instant {
        self.life.valid_until()
    }

    fn renewed(&self, sent: Instant) {
        self.life.extend_to(sent + validity(self.ttl));
    }

    /// Marks the session lost.
    pub fn mark_lost(&self) {
        self.life.mark_lost();
    }

    /// Completes once the session is lost; on any executor.
    pub async fn lost(&self) {
        self.life.lost().await
    }

    /// Records a request of the session on the name of `keys` (the keep-alive renews it).
    pub fn add_name(&self, keys: &NameKeys) {
        let mut names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        names.entry(keys.queue.clone()).or_insert_with(|| (keys.clone(), 0)).1 += 1;
    }

    /// Records that a request of the session on the name of `keys` is gone.
    pub fn remove_name(&self, keys: &NameKeys) {
        let mut names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = names.get_mut(&keys.queue) {
            entry.1 -= 1;
            if entry.1 == 0 {
                names.remove(&keys.queue);
            }
        }
    }

    fn names(&self) -> Vec<NameKeys> {
        self.names.lock().unwrap_or_else(|e| e.into_inner()).values().map(|(keys, _)| keys.clone()).collect()
    }
}

/// How long after a renewal is sent the session counts as valid: the TTL less a
/// twentieth, at least 50 ms (clocks that run at different rates, a paused process).
fn validity(ttl: Duration) -> Duration {
    ttl.saturating_sub((ttl / 20).max(Duration::from_millis(50)))
}

/// Renews `session` on every name it has requests on, every third of its TTL, until it is
/// lost. A name that answers that the session had lapsed there loses the session.
async fn keep_alive(session: Arc<Session>) {
    let interval = session.ttl / 3;
    loop {
        let sent = Instant::now();
        let names = session.names();
        let mut connection = session.connection.clone();
        let renewals = async {
            let mut all = true;
            for keys in &names {
                let mut invocation = session.scripts.renew.prepare_invoke();
                for key in keys.script_keys() {
                    invocation.key(key);
                }
                invocation.arg(&session.id).arg(session.ttl_ms());
                let answer: i64 = invocation.invoke_async(&mut connection).await?;
                all &= answer == 1;
            }
            if names.is_empty() {
                let _: String = redis::cmd("PING").query_async(&mut connection).await?;
            }
            Ok::<bool, redis::RedisError>(all)
        };
        let remaining = session.valid_until().saturating_duration_since(Instant::now());
        match tokio::time::timeout(remaining, renewals).await {
            Ok(Ok(true)) => session.renewed(sent),
            Ok(Ok(false)) => {
                tracing::warn!(target: "latchkey", session = session.id, "the Redis session had lapsed: its locks are lost");
                session.mark_lost();
                return;
            }
            Ok(Err(e)) => tracing::debug!(target: "latchkey", session = session.id, "a Redis renewal failed: {e}"),
            Err(_) => {}
        }
        if session.is_lost() {
            tracing::warn!(target: "latchkey", session = session.id, "the Redis session lapsed: its locks are lost");
            return;
        }
        tokio::select! {
            () = tokio::time::sleep_until((sent + interval).into()) => {}
            () = session.lost() => return,
        }
    }
}

/// 16 random hex digits.
fn random_id() -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 8];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(format!("{:016x}", u64::from_le_bytes(bytes)))
}
