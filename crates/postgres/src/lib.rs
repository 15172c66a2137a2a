//! latchkey's PostgreSQL scope: named locks shared by the machines of a fleet, on a
//! PostgreSQL database (`postgres://user@host:5432/dbname?ttl=10s&schema=latchkey`).
//!
//! - `config`: the scope URL, libpq's parameters and `PG*` variables; `pgpass`: its
//!   password file;
//! - `schema` and `schema.sql`: the tables and functions, made on first use, where the
//!   one grant rule runs (FIFO by token) as one statement per step; `sql`: the plain
//!   statements of the common cases;
//! - `tls`: libpq's `sslmode`, on rustls;
//! - `session`: the one connection and server session per scope, its keep-alive, and how
//!   waiters are woken (`LISTEN`/`NOTIFY`, and ended sessions seen by the keep-alive);
//! - `shared`, `lock` and `scope`: the scope contract of `latchkey-model`, on the scope's
//!   own thread (`latchkey_remote::Driver`).

mod config;
mod lock;
mod pgpass;
mod schema;
mod scope;
mod session;
mod shared;
#[doc(hidden)]
pub mod sql;
mod tls;

pub use config::{Config, TlsMode};
pub use lock::PostgresLock;
pub use scope::PostgresScope;
pub use session::DEATH_CHECK;
