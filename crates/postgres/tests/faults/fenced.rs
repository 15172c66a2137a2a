//! The fenced resources of the tests: a row of a table of the same server, written only
//! with a fencing token at least as great as the last one that wrote it (the check a
//! careful resource makes), through a plain tokio-postgres connection that is made again
//! after a failure (a server restart).

use std::cell::RefCell;
use std::time::Duration;

use std::future::Future;
use std::pin::Pin;

use tokio::runtime::Runtime;
use tokio_postgres::{Client, Error, NoTls};

/// A statement on the fence's connection.
type Call<'c, T> = Pin<Box<dyn Future<Output = Result<T, Error>> + 'c>>;

/// One fenced row, `id = 1` of `table`.
pub struct Fence {
    rt: Runtime,
    url: String,
    client: RefCell<Option<Client>>,
    table: String,
}

impl Fence {
    /// Connects to `url` (a plain connection URL) and makes `table` with its row if missing.
    pub fn connect(url: &str, table: &str) -> Fence {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
        let fence = Fence { rt, url: url.to_string(), client: RefCell::new(None), table: table.to_string() };
        fence.retrying(|client, table| {
            Box::pin(async move {
                client
                    .batch_execute(&format!(
                        "CREATE TABLE IF NOT EXISTS {table} (id int PRIMARY KEY, token bigint NOT NULL, value bigint NOT NULL);
                         INSERT INTO {table} VALUES (1, 0, 0) ON CONFLICT DO NOTHING"
                    ))
                    .await
            })
        });
        fence
    }

    /// Runs `work` once on the connection, connecting first if needed; a failure drops the
    /// connection, to be made again next time.
    fn once<T>(&self, work: impl for<'c> FnOnce(&'c Client, &'c str) -> Call<'c, T>) -> Result<T, Error> {
        let mut slot = self.client.borrow_mut();
        if slot.as_ref().is_none_or(Client::is_closed) {
            let (client, connection) = self.rt.block_on(tokio_postgres::connect(&self.url, NoTls))?;
            self.rt.spawn(connection);
            *slot = Some(client);
        }
        let answer = self.rt.block_on(work(slot.as_ref().expect("connected"), &self.table));
        if answer.is_err() {
            *slot = None;
        }
        answer
    }

    /// Runs `work` until it succeeds (the server may be restarting), at most 30 s.
    fn retrying<T>(&self, work: impl for<'c> Fn(&'c Client, &'c str) -> Call<'c, T>) -> T {
        for _ in 0..300 {
            match self.once(&work) {
                Ok(answer) => return answer,
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
        panic!("the fenced resource did not answer in 30 s");
    }

    /// Writes `value` with `token`: whether the resource took it.
    pub fn write(&self, token: u64, value: i64) -> bool {
        self.retrying(|client, table| {
            Box::pin(async move {
                let sql = format!("UPDATE {table} SET token = $1, value = $2 WHERE id = 1 AND token <= $1");
                client.execute(&sql, &[&(token as i64), &value]).await
            })
        }) == 1
    }

    /// Reads the value with `token` (the resource then refuses every lower token, as a
    /// fenced store checks the token at every access), waits `pause`, and unless `lost()`
    /// says the hold is lost by then, writes it plus one with `token` (a read-modify-write
    /// that only mutual exclusion keeps whole): the value written if the resource took it;
    /// `Err` if the connection failed on the way (nothing written).
    pub fn increment(&self, token: u64, pause: Duration, lost: impl Fn() -> bool) -> Result<Option<i64>, Error> {
        let value: Option<i64> = self.once(|client, table| {
            Box::pin(async move {
                let sql = format!("UPDATE {table} SET token = $1 WHERE id = 1 AND token <= $1 RETURNING value");
                Ok(client.query_opt(&sql, &[&(token as i64)]).await?.map(|row| row.get(0)))
            })
        })?;
        let Some(value) = value else { return Ok(None) };
        std::thread::sleep(pause);
        if lost() {
            return Ok(None);
        }
        let written = self.once(|client, table| {
            Box::pin(async move {
                let sql = format!("UPDATE {table} SET token = $1, value = $2 WHERE id = 1 AND token <= $1");
                client.execute(&sql, &[&(token as i64), &(value + 1)]).await
            })
        })?;
        Ok((written == 1).then_some(value + 1))
    }

    /// The value now.
    pub fn value(&self) -> i64 {
        self.retrying(|client, table| {
            Box::pin(async move {
                Ok(client.query_one(&format!("SELECT value FROM {table} WHERE id = 1"), &[]).await?.get(0))
            })
        })
    }
}
