//! Futures of the scope dropped at every await point leave nothing behind on the server
//! (the scenario of `latchkey-testkit/scenarios/cancel.rs`).

use latchkey::Scope;
use latchkey_testkit::PostgresServer;
use tokio_postgres::NoTls;

use crate::support::{advisory_locks, url, wait_until};

#[path = "../../../testkit/scenarios/cancel.rs"]
mod scenario;

/// The scope's schema.
const SCHEMA: &str = "cancel";

/// Issue 11: the scenario on the PostgreSQL scope (the requests are the rows of the
/// schema's `requests`); closed scopes leave no advisory lock.
#[test]
fn dropped_futures_leave_nothing_behind() {
    let server = PostgresServer::start();
    let url = url(&server, SCHEMA, "3s", "");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let (client, connection) = tokio_postgres::connect(&server.url(""), NoTls).await.unwrap();
        tokio::spawn(connection);
        let scope = Scope::connect(&url).await.unwrap();
        let other = Scope::connect(&url).await.unwrap();
        let requests = || async {
            let sql = format!("SELECT session, token FROM {SCHEMA}.requests ORDER BY token");
            let rows = client.query(&sql, &[]).await.expect("read the requests");
            rows.iter().map(|row| format!("{}/{}", row.get::<_, i64>(0), row.get::<_, i64>(1))).collect()
        };
        scenario::dropped_futures_leave_nothing_behind(&scope, &other, requests).await;
    });
    // The closed scopes' sessions end on the server, with their advisory locks.
    wait_until("the sessions' advisory locks go", || advisory_locks(&server) == 0);
}
