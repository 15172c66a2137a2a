//! The scope's tables and functions (`schema.sql`): made on first use in the schema the URL
//! names, and the errors that say what to grant when the scope may not.

use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use latchkey_model::{describe_capacity, Error, ErrorKind, Result};

use crate::session::quote_identifier;
use crate::Config;

/// The version of `schema.sql` this build writes and expects. A released schema is never
/// changed in place: a change is a new version, whose SQL also drops the functions whose
/// arguments or results it changes (`CREATE OR REPLACE` cannot change those).
const VERSION: i32 = 1;

/// The schema's SQL, with `@schema@` and `@mark@` to fill in.
const SQL: &str = include_str!("schema.sql");

/// One schema of latchkey's tables.
#[derive(Clone, Debug)]
pub(crate) struct Schema {
    name: String,
}

impl Schema {
    pub fn new(name: &str) -> Schema {
        Schema { name: name.to_string() }
    }

    /// The schema's name as an SQL identifier.
    pub fn quoted(&self) -> String {
        quote_identifier(&self.name)
    }

    /// `schema.sql` for this schema.
    pub fn sql(&self) -> String {
        let mark = format!("'{}'", self.name.replace('\'', "''"));
        SQL.replace("@schema@", &self.quoted()).replace("@mark@", &mark)
    }

    fn grant_hint(&self, config: &Config) -> String {
        let user = config.connection.get_user().unwrap_or("the user");
        let db = config.connection.get_dbname().unwrap_or("the database");
        format!(
            "the scope makes its schema {name} on first use; let it (`GRANT CREATE ON DATABASE {db} TO {user}`), \
             or have the schema's owner let it use the schema (`GRANT USAGE ON SCHEMA {name} TO {user}; \
             GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {name} TO {user}; \
             GRANT USAGE ON ALL SEQUENCES IN SCHEMA {name} TO {user}`)",
            name = self.name
        )
    }
}

/// Sets the session's parameters and makes the schema if it is missing or older.
pub(crate) async fn set_up(client: &Client, schema: &Schema, config: &Config) -> Result<()> {
    let ttl_ms = config.ttl.as_millis();
    // The server ends the session a TTL after its last statement (`idle_session_timeout`),
    // or once what it sends has gone unacknowledged for two TTLs (`tcp_user_timeout`: a
    // server process blocked writing notifications to a client cut off is not idle; twice
    // the TTL, so that it cannot end a session whose client still counts it valid unless
    // the network held the server's messages back for more than a TTL). No timeout of a
    // role or database may fail a release half way.
    let tcp_ms = 2 * ttl_ms;
    let settings = format!(
        "SET idle_session_timeout = {ttl_ms}; SET tcp_user_timeout = {tcp_ms}; SET synchronous_commit = on; \
         SET default_transaction_isolation = 'read committed'; SET idle_in_transaction_session_timeout = 0; \
         SET lock_timeout = 0; SET statement_timeout = 0; \
         SELECT set_config(name, '0', false) FROM pg_settings WHERE name = 'transaction_timeout'"
    );
    if let Err(e) = client.batch_execute(&settings).await {
        if e.code() == Some(&SqlState::UNDEFINED_OBJECT) {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!("the PostgreSQL scope needs PostgreSQL 14 or later (for idle_session_timeout): {e}"),
            ));
        }
        return Err(database_error("setting up the session", &e, schema));
    }
    let version = client.query_opt(&format!("SELECT max(version) FROM {}.version", schema.quoted()), &[]).await;
    match version {
        Ok(Some(row)) if row.get::<_, Option<i32>>(0) == Some(VERSION) => return Ok(()),
        Ok(Some(row)) if row.get::<_, Option<i32>>(0).is_some_and(|v| v > VERSION) => {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!("the schema {} was made by a newer latchkey; upgrade this one", schema.name),
            ));
        }
        Ok(_) => {}
        Err(e) if matches!(e.code(), Some(c) if *c == SqlState::UNDEFINED_TABLE || *c == SqlState::INVALID_SCHEMA_NAME) =>
            {}
        Err(e) if e.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) => {
            return Err(Error::new(ErrorKind::PermissionDenied, format!("{e}: {}", schema.grant_hint(config))));
        }
        Err(e) => return Err(database_error("reading the schema's version", &e, schema)),
    }
    // One maker at a time: CREATE ... IF NOT EXISTS is not safe against a concurrent one.
    let install = format!(
        "BEGIN; SELECT pg_advisory_xact_lock(hashtext('latchkey-setup'), hashtext('{name}')); {sql} COMMIT;",
        name = schema.name,
        sql = schema.sql()
    );
    if let Err(e) = client.batch_execute(&install).await {
        let _ = client.batch_execute("ROLLBACK").await;
        if e.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) {
            return Err(Error::new(ErrorKind::PermissionDenied, format!("{e}: {}", schema.grant_hint(config))));
        }
        return Err(database_error("making the schema", &e, schema));
    }
    Ok(())
}

/// Starts the session: the advisory lock that says it is alive, on a new random number,
/// and the setting that every queuing statement checks (see `sql::BEGIN_SESSION`).
pub(crate) async fn begin_session(client: &Client, schema: &Schema) -> Result<(i64, i32)> {
    loop {
        let id = crate::sql::session_number()?;
        let row = client
            .query_one(crate::sql::BEGIN_SESSION, &[&id])
            .await
            .map_err(|e| database_error("starting a session", &e, schema))?;
        let (locked, backend): (bool, i32) = (row.get(0), row.get(1));
        if locked {
            return Ok((id, backend));
        }
    }
}

/// The error for a statement that failed with `e` on a live session.
pub(crate) fn database_error(what: &str, e: &tokio_postgres::Error, schema: &Schema) -> Error {
    let Some(db) = e.as_db_error() else {
        return Error::new(ErrorKind::Unavailable, format!("PostgreSQL failed {what}: {e}"));
    };
    match db.code().code() {
        "LK001" => Error::new(
            ErrorKind::Unsupported,
            "the connection's statements reach different server sessions, as through a pooler in \
             transaction mode (PgBouncer): latchkey needs one session per scope; connect to PostgreSQL \
             directly or through a pooler in session mode",
        ),
        "LK002" => {
            let other = db.hint().and_then(|h| h.parse::<u32>().ok()).unwrap_or(0);
            Error::new(ErrorKind::CapacityMismatch, format!("it is in use as {}", describe_capacity(other)))
        }
        "LK003" => Error::new(ErrorKind::Unsupported, format!("PostgreSQL refused {what}: {}", db.message())),
        "42501" => Error::new(
            ErrorKind::PermissionDenied,
            format!("PostgreSQL refused {what}: {}; the user needs the rights on schema {}", db.message(), schema.name),
        ),
        "42883" | "42P01" | "3F000" => Error::new(
            ErrorKind::Corrupted,
            format!("latchkey's schema {} is missing a part ({}): was it changed by hand?", schema.name, db.message()),
        ),
        _ => Error::new(ErrorKind::Unavailable, format!("PostgreSQL failed {what}: {}", db.message())),
    }
}
