//! The peer "latchkey's statements, raw": the two statements an uncontended acquire and
//! release of the scope send (`enqueue_fast` and `release`, copied from
//! `crates/postgres/src/session.rs`; the `enqueue` function of `schema.sql` for the first
//! request of a name), prepared on the raw connection of [`Raw`] and sent from the
//! measuring thread's runtime: what the scope's SQL costs without the scope's thread,
//! channel and bookkeeping. The session is set up as the scope sets up its own (a number
//! from the schema's sequence, its advisory lock, `latchkey.session`).

use std::time::Instant;

use tokio_postgres::types::ToSql;
use tokio_postgres::Statement;

use super::{bounded, Raw};

pub struct Latchkey {
    enqueue_fast: Statement,
    enqueue: Statement,
    release: Statement,
    session: i64,
    backend: i32,
    host: String,
}

impl Latchkey {
    /// Starts a latchkey session on `raw`'s connection, in `schema` (which the scope has
    /// made), and prepares the statements.
    pub fn prepare(raw: &Raw, schema: &str) -> Latchkey {
        let s = format!("\"{schema}\"");
        let client = &raw.client;
        raw.rt.block_on(async {
            let take = format!(
                "SELECT id, pg_try_advisory_lock({s}.session_key(id)), pg_backend_pid() \
                 FROM (SELECT nextval('{s}.sessions') AS id) AS n"
            );
            let row = bounded("starting a session", client.query_one(&take, &[])).await;
            let (session, locked, backend): (i64, bool, i32) = (row.get(0), row.get(1), row.get(2));
            assert!(locked, "the new session's advisory lock was taken");
            let set = "SELECT set_config('latchkey.session', $1, false)";
            bounded("starting a session", client.query_one(set, &[&session.to_string()])).await;
            let prepare = |sql: String| async move { bounded("prepare", client.prepare(&sql)).await };
            Latchkey {
                enqueue_fast: prepare(format!(
                    "WITH q AS (
                        UPDATE {s}.queues q
                        SET token = q.token + 1, queued = q.queued + $4,
                            capacity = CASE WHEN q.queued = 0 THEN $5 ELSE q.capacity END
                        WHERE q.name = $1 AND ((q.token + 1) & 4294967295) <> 0
                          AND (q.queued = 0 OR q.capacity = $5) AND (NOT $8 OR q.queued + $4 <= $5)
                          AND current_setting('latchkey.session', true) = $2::bigint::text
                        RETURNING q.token, q.queued
                     ), r AS (
                        INSERT INTO {s}.requests (name, token, session, backend, permits, capacity, pid, host)
                        SELECT $1, q.token, $2, $3, $4, $5, $6, $7 FROM q
                     )
                     SELECT q.token, q.queued <= $5 AS holds, NULL::bigint[] AS blockers, NULL::int[] AS backends,
                        CASE WHEN q.queued > $5 THEN {s}.channel($1) END AS channel
                     FROM q"
                ))
                .await,
                enqueue: prepare(format!("SELECT * FROM {s}.enqueue($1, $2, $3, $4, $5, $6, $7, $8)")).await,
                release: prepare(format!(
                    "WITH d AS (
                        DELETE FROM {s}.requests r WHERE r.name = $1 AND r.token = $2 AND r.session = $3
                        RETURNING r.permits
                     ), q AS (
                        UPDATE {s}.queues q SET queued = q.queued - d.permits FROM d WHERE q.name = $1
                        RETURNING q.queued
                     )
                     SELECT CASE WHEN q.queued > 0 THEN pg_notify({s}.channel($1), '') END FROM q"
                ))
                .await,
                session,
                backend,
                host: "latchkey-bench".to_string(),
            }
        })
    }

    /// ns per cycle of `iters` { enqueue (one permit of one); release } on `name`.
    pub fn cycles(&self, raw: &Raw, iters: u64, name: &str) -> f64 {
        let client = &raw.client;
        let (permits, capacity, pid, try_only) = (1_i64, 1_i64, i64::from(std::process::id()), false);
        let name = name.to_string();
        raw.rt.block_on(async {
            let start = Instant::now();
            for _ in 0..iters {
                let params: [&(dyn ToSql + Sync); 8] =
                    [&name, &self.session, &self.backend, &permits, &capacity, &pid, &self.host, &try_only];
                let row = match bounded("enqueue", client.query_opt(&self.enqueue_fast, &params)).await {
                    Some(row) => row,
                    None => bounded("enqueue", client.query_one(&self.enqueue, &params)).await,
                };
                assert!(row.get::<_, Option<bool>>("holds").unwrap_or(false), "an uncontended request waits");
                let token: i64 = row.get("token");
                let released =
                    bounded("release", client.query_opt(&self.release, &[&name, &token, &self.session])).await;
                assert!(released.is_some(), "the request was not there to release");
            }
            start.elapsed().as_nanos() as f64 / iters as f64
        })
    }
}
