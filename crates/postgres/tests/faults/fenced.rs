//! The fenced resources of the tests: a row of a table of the same server, written only
//! with a fencing token at least as great as the last one that wrote it (the check a
//! careful resource makes), through a plain tokio-postgres connection.

use tokio::runtime::Runtime;
use tokio_postgres::{Client, NoTls};

/// One fenced row, `id = 1` of `table`.
pub struct Fence {
    rt: Runtime,
    client: Client,
    table: String,
}

impl Fence {
    /// Connects to `url` (a plain connection URL) and makes `table` with its row if missing.
    pub fn connect(url: &str, table: &str) -> Fence {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
        let client = rt.block_on(async {
            let (client, connection) = tokio_postgres::connect(url, NoTls).await.expect("connect the fence");
            tokio::spawn(connection);
            client
                .batch_execute(&format!(
                    "CREATE TABLE IF NOT EXISTS {table} (id int PRIMARY KEY, token bigint NOT NULL, value bigint NOT NULL);
                     INSERT INTO {table} VALUES (1, 0, 0) ON CONFLICT DO NOTHING"
                ))
                .await
                .expect("make the fenced table");
            client
        });
        Fence { rt, client, table: table.to_string() }
    }

    /// Writes `value` with `token`: whether the resource took it.
    pub fn write(&self, token: u64, value: i64) -> bool {
        let sql = format!("UPDATE {} SET token = $1, value = $2 WHERE id = 1 AND token <= $1", self.table);
        self.rt.block_on(self.client.execute(&sql, &[&(token as i64), &value])).expect("a fenced write") == 1
    }

    /// Reads the value and writes it plus one, with `token` (a read-modify-write that
    /// only mutual exclusion keeps whole): the value written, if the resource took it.
    pub fn increment(&self, token: u64) -> Option<i64> {
        let read = format!("SELECT value FROM {} WHERE id = 1", self.table);
        let value: i64 = self.rt.block_on(self.client.query_one(&read, &[])).expect("a read").get(0);
        self.write(token, value + 1).then_some(value + 1)
    }

    /// The value now.
    pub fn value(&self) -> i64 {
        let read = format!("SELECT value FROM {} WHERE id = 1", self.table);
        self.rt.block_on(self.client.query_one(&read, &[])).expect("a read").get(0)
    }
}
