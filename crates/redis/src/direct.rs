//! Blocking calls on the caller's own thread. An uncontended `lock_blocking`, `try_lock` or
//! `release` is one script on a synchronous connection of the caller's, as a raw `SET NX
//! PX` is, instead of a hop to the scope's thread and back (which costs about as much as
//! the round trip itself). Waiting, keep-alive, wake-ups and every async call stay on the
//! scope's thread.
//!
//! Each blocking caller uses one connection at a time; at most [`IDLE`] are kept between
//! calls. A connection whose call failed is dropped (its answer may still come). A call
//! that failed on a connection kept idle (killed meanwhile, or its server restarted) is
//! made again on the scope's thread, once what it may have left is withdrawn.

use std::sync::Mutex;
use std::time::Duration;

use redis::{RedisResult, ScriptInvocation, Value};

/// How many idle connections the scope keeps for blocking callers.
const IDLE: usize = 8;

/// A call that failed.
#[derive(Debug)]
pub(crate) struct Failure {
    pub error: redis::RedisError,
    /// Whether it failed on a connection kept idle that had broken meanwhile (killed, or
    /// the server restarted): most likely before the script ran, but not surely.
    pub stale: bool,
}

/// The synchronous connections of a scope's blocking callers.
pub(crate) struct Direct {
    client: redis::Client,
    /// How long a connect, a send or an answer may take.
    timeout: Duration,
    idle: Mutex<Vec<redis::Connection>>,
}

impl Direct {
    pub fn new(client: redis::Client, timeout: Duration) -> Direct {
        Direct { client, timeout, idle: Mutex::default() }
    }

    /// Runs `invocation` (loading its script if the server lacks it) on an idle connection,
    /// or a new one, waiting for each answer at most `limit` (if shorter than the scope's
    /// timeout).
    pub fn invoke(&self, invocation: &ScriptInvocation<'_>, limit: Option<Duration>) -> Result<Value, Failure> {
        let failed = |error| Failure { error, stale: false };
        let patience = limit.map_or(self.timeout, |limit| limit.clamp(Duration::from_millis(1), self.timeout));
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let (mut connection, reused) = match idle {
            Some(connection) => (connection, true),
            None => (self.connect(patience).map_err(failed)?, false),
        };
        connection.set_read_timeout(Some(patience)).map_err(failed)?;
        match invocation.invoke(&mut connection) {
            Ok(answer) => {
                self.keep(connection);
                Ok(answer)
            }
            Err(error) => {
                let broken = error.is_io_error() || error.is_connection_dropped() || error.is_unrecoverable_error();
                if !broken && !error.is_timeout() {
                    self.keep(connection);
                }
                // A timeout is no sign of a stale connection: the script may still run
                // (review finding: a release that ran was retried, and reported lost).
                Err(Failure { stale: reused && broken && !error.is_timeout(), error })
            }
        }
    }

    fn keep(&self, connection: redis::Connection) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < IDLE {
            idle.push(connection);
        }
    }

    fn connect(&self, patience: Duration) -> RedisResult<redis::Connection> {
        let connection = self.client.get_connection_with_timeout(patience)?;
        connection.set_write_timeout(Some(self.timeout))?;
        Ok(connection)
    }
}
