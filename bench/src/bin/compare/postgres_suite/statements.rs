//! The peer "latchkey's statements, raw": the two statements an uncontended acquire and
//! release of the scope send (`enqueue_fast` and `release`, from `latchkey_postgres::sql`;
//! the `enqueue` function of `schema.sql` for the first request of a name), prepared on the
//! raw connection of [`Raw`] and sent from the measuring thread's runtime: what the scope's
//! SQL costs without the scope's thread, channel and bookkeeping. The session is set up as
//! the scope sets up its own (`sql::BEGIN_SESSION`).

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
            let (session, backend) = loop {
                let session = latchkey_postgres::sql::session_number().expect("a session number");
                let row =
                    bounded("starting a session", client.query_one(latchkey_postgres::sql::BEGIN_SESSION, &[&session]))
                        .await;
                if row.get::<_, bool>(0) {
                    break (session, row.get::<_, i32>(1));
                }
            };
            let prepare = |sql: String| async move { bounded("prepare", client.prepare(&sql)).await };
            Latchkey {
                enqueue_fast: prepare(latchkey_postgres::sql::enqueue_fast(&s)).await,
                enqueue: prepare(format!("SELECT * FROM {s}.enqueue($1, $2, $3, $4, $5, $6, $7, $8)")).await,
                release: prepare(latchkey_postgres::sql::release(&s)).await,
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
