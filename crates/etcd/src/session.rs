//! The scope's session: one etcd lease, kept alive by one task, that carries every request
//! key of the scope.
//!
//! The session knows when it lapses without asking the server: each keep-alive answer
//! extends its validity to the time the keep-alive was *sent* plus the TTL granted, which
//! is never later than the server's own expiry. Once that time passes without an answer
//! (a cut network, a process paused past its TTL) or the server says the lease is gone,
//! the session is lost for good: `lost()` fires and a new session is made for new requests.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use etcd_client::Client;
use latchkey_remote::Life;

/// One lease and what is known of its life.
#[derive(Debug)]
pub(crate) struct Session {
    /// The etcd lease id.
    pub lease: i64,
    ttl: Duration,
    life: Life,
    numbers: AtomicU64,
    /// Request keys whose put was sent more than once: deleted once more, later.
    unsure: Mutex<std::collections::HashSet<String>>,
}

impl Session {
    /// A session for the lease `lease`, granted with `ttl` by a request sent at `sent`.
    pub fn new(lease: i64, ttl: Duration, sent: Instant) -> Session {
        Session { lease, ttl, life: Life::new(sent + ttl), numbers: AtomicU64::new(0), unsure: Mutex::default() }
    }

    /// Records that the put of `key` was sent more than once.
    pub fn mark_unsure(&self, key: &str) {
        self.unsure.lock().unwrap_or_else(|e| e.into_inner()).insert(key.to_string());
    }

    /// Whether the put of `key` was sent more than once; forgets it.
    pub fn take_unsure(&self, key: &str) -> bool {
        self.unsure.lock().unwrap_or_else(|e| e.into_inner()).remove(key)
    }

    /// A number for a new request key of this session, never used before.
    pub fn next_number(&self) -> u64 {
        self.numbers.fetch_add(1, Ordering::Relaxed)
    }

    /// The TTL the lease was granted with.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Whether the session is lost: cheap, and true from the instant its validity ends.
    pub fn is_lost(&self) -> bool {
        self.life.is_lost()
    }

    /// Until when the session is valid without another keep-alive answer.
    pub fn valid_until(&self) -> Instant {
        self.life.valid_until()
    }

    /// Records a keep-alive answer to a request sent at `sent`, granting `ttl`. An answer
    /// that comes after the validity ended does not revive a lost session.
    pub fn renewed(&self, sent: Instant, ttl: Duration) {
        self.life.extend_to(sent + ttl);
    }

    /// Marks the session lost (the server said the lease is gone, or the scope closed).
    pub fn mark_lost(&self) {
        self.life.mark_lost();
    }

    /// Completes once the session is lost; on any executor.
    pub async fn lost(&self) {
        self.life.lost().await
    }
}

/// Keeps `session` alive with `client` until it is lost: a keep-alive every third of the
/// TTL, and a new keep-alive stream whenever one fails, for as long as the session is
/// still valid. Runs on the scope's thread.
pub(crate) async fn keep_alive(client: Client, session: std::sync::Arc<Session>) {
    let interval = session.ttl() / 3;
    let mut client = client;
    let mut backoff = Duration::from_millis(50);
    while !session.is_lost() {
        let remaining = session.valid_until().saturating_duration_since(Instant::now());
        let stream = tokio::time::timeout(remaining, client.lease_keep_alive(session.lease)).await;
        let (mut keeper, mut answers) = match stream {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                tracing::debug!(target: "latchkey", lease = session.lease, "keep-alive stream failed to open: {e}");
                tokio::time::sleep(backoff.min(remaining)).await;
                backoff = (backoff * 2).min(interval);
                continue;
            }
            Err(_) => continue,
        };
        loop {
            let sent = Instant::now();
            if keeper.keep_alive().await.is_err() {
                break;
            }
            let remaining = session.valid_until().saturating_duration_since(Instant::now());
            match tokio::time::timeout(remaining, answers.message()).await {
                Ok(Ok(Some(answer))) if answer.ttl() > 0 => {
                    session.renewed(sent, Duration::from_secs(answer.ttl() as u64));
                    backoff = Duration::from_millis(50);
                }
                Ok(Ok(Some(_))) => {
                    tracing::warn!(target: "latchkey", lease = session.lease, "the etcd session's lease expired");
                    session.mark_lost();
                    return;
                }
                Ok(Ok(None) | Err(_)) | Err(_) => break,
            }
            let next = sent + interval;
            tokio::time::sleep_until(next.into()).await;
        }
        if session.is_lost() {
            break;
        }
        tracing::debug!(target: "latchkey", lease = session.lease, "keep-alive stream ended; opening another");
    }
    tracing::warn!(target: "latchkey", lease = session.lease, "the etcd session lapsed: its locks are lost");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_lost_from_the_end_of_its_validity_and_stays_lost() {
        let session = Session::new(1, Duration::from_millis(30), Instant::now());
        assert!(!session.is_lost());
        latchkey_model::block_on_until(session.lost(), None).unwrap();
        assert!(session.is_lost());
        session.renewed(Instant::now(), Duration::from_secs(60));
        assert!(session.is_lost(), "a late answer revived a lost session");
    }

    #[test]
    fn a_renewal_extends_the_validity_from_when_it_was_sent() {
        let sent = Instant::now();
        let session = Session::new(1, Duration::from_secs(2), sent);
        session.renewed(sent + Duration::from_secs(1), Duration::from_secs(2));
        assert_eq!(session.valid_until(), sent + Duration::from_secs(3));
        session.mark_lost();
        assert!(session.is_lost());
    }
}
