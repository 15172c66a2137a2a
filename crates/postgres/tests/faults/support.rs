//! What the fault tests share: a server of their own, worker processes, bounded waits,
//! seeded randomness (`latchkey_testkit::worker`).

pub use latchkey_testkit::worker::*;
use latchkey_testkit::PostgresServer;

pub use crate::common::url;

/// The requests left in `schema` (rows, dead sessions' too).
pub fn rows(server: &PostgresServer, schema: &str) -> i64 {
    server.psql(&format!("SELECT count(*) FROM {schema}.requests")).parse().expect("a count")
}

/// The advisory locks held on the server (latchkey's sessions hold one each).
pub fn advisory_locks(server: &PostgresServer) -> i64 {
    server.psql("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'").parse().expect("a count")
}

/// The server process of the session whose `application_name` is `app`.
#[track_caller]
pub fn backend_of(server: &PostgresServer, app: &str) -> i32 {
    let mut pid = String::new();
    wait_until(&format!("a session named {app}"), || {
        pid = server.psql(&format!("SELECT pid FROM pg_stat_activity WHERE application_name = '{app}'"));
        !pid.is_empty()
    });
    pid.lines().next().unwrap().parse().expect("a pid")
}
