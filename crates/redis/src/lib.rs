//! latchkey's Redis scope (in progress, issue 12): named locks shared by the machines of a
//! fleet, on a Redis server (`redis://[user:password@]host:6379/db?ttl=10s`, `rediss://`
//! for TLS). See `docs/plans/redis.md`.
//!
//! - `config`: the scope URL; `keys`: the key layout (a hash tag per name);
//! - `scripts`: the server-side steps, one Lua script each;
//! - `session`: the one session per scope and its keep-alive; `notify`: wake-ups over
//!   pub/sub;
//! - `shared`, `lock` and `scope`: the scope contract of `latchkey-model`, on the scope's
//!   own thread (`latchkey_remote::Driver`).

mod config;
mod connection;
mod direct;
pub mod keys;
mod lock;
mod notify;
mod requests;
mod scope;
pub mod scripts;
mod session;
mod shared;

pub use config::Config;
pub use lock::RedisLock;
pub use scope::RedisScope;
