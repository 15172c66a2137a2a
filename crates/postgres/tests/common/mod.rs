//! Helpers shared by the PostgreSQL scope's test binaries (included by each; not every
//! binary uses every helper).
#![allow(dead_code)]

use latchkey_testkit::PostgresServer;
use tokio_postgres::NoTls;

/// The URL of a scope in schema `schema` of `server`, with a TTL of `ttl` and extra
/// parameters `extra` (`&`-joined, may be empty).
pub fn url(server: &PostgresServer, schema: &str, ttl: &str, extra: &str) -> String {
    let query = format!("ttl={ttl}&schema={schema}");
    server.url(&if extra.is_empty() { query } else { format!("{query}&{extra}") })
}

/// Another client of the server, outside latchkey, that can hold a transaction open.
pub struct Outsider {
    runtime: tokio::runtime::Runtime,
    client: tokio_postgres::Client,
}

impl Outsider {
    pub fn connect(server: &PostgresServer) -> Outsider {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let client = runtime.block_on(async {
            let (client, connection) = tokio_postgres::connect(&server.url(""), NoTls).await.unwrap();
            tokio::spawn(connection);
            client
        });
        Outsider { runtime, client }
    }

    /// Runs `sql` (statements separated by `;`).
    pub fn run(&self, sql: &str) {
        self.runtime.block_on(self.client.batch_execute(sql)).unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// The number the one-row, one-column query `sql` answers.
    pub fn count(&self, sql: &str) -> i64 {
        self.runtime.block_on(self.client.query_one(sql, &[])).unwrap_or_else(|e| panic!("{sql}: {e}")).get(0)
    }
}
