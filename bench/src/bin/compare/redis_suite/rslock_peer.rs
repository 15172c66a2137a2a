//! The peer "rslock": `rslock` 0.10, the most used Redis lock crate (Redlock over one or
//! more servers; here one), with its `tokio-comp` feature and the `redis` 1.x it depends
//! on, on a current-thread Tokio runtime that the measuring thread drives. Its lock is
//! `SET resource <20 random bytes> NX PX ttl` on each server (a quorum of one), its unlock
//! a compare-and-delete script (`EVALSHA`); no fencing token, no queue.

use std::time::{Duration, Instant};

use latchkey_redis::Config;
use rslock::LockManager;
use tokio::runtime::Runtime;

use super::{runtime, RAW_TTL_MS};

pub struct Rslock {
    rt: Runtime,
    manager: LockManager,
}

impl Rslock {
    /// A lock manager of the one server of `config`: the same address, database and
    /// credentials, TLS with the system's CAs for `rediss://`. It connects at its first lock.
    pub fn new(config: &Config) -> Rslock {
        let credentials = match &config.credentials {
            Some((user, password)) => {
                format!("{}:{}@", user.as_deref().map(encode).unwrap_or_default(), encode(password))
            }
            None => String::new(),
        };
        let scheme = if config.tls.is_some() { "rediss" } else { "redis" };
        let url = format!("{scheme}://{credentials}{}/{}", config.address, config.db);
        Rslock { rt: runtime(), manager: LockManager::new(vec![url]) }
    }

    /// ns per cycle of `iters` { lock; unlock } on `resource`.
    pub fn cycles(&self, iters: u64, resource: &str) -> f64 {
        let ttl = Duration::from_millis(RAW_TTL_MS);
        self.rt.block_on(async {
            let start = Instant::now();
            for _ in 0..iters {
                let lock = match self.manager.lock(resource, ttl).await {
                    Ok(lock) => lock,
                    Err(e) => panic!("rslock: an uncontended lock failed: {e}"),
                };
                self.manager.unlock(&lock).await;
            }
            start.elapsed().as_nanos() as f64 / iters as f64
        })
    }
}

/// `text` percent-encoded for the user-information part of a URL.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
