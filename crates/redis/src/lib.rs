//! latchkey's Redis scope (in progress, issue 12): named locks shared by the machines of a
//! fleet, on a Redis server (`redis://[user:password@]host:6379/db?ttl=10s`, `rediss://`
//! for TLS). See `docs/plans/redis.md`.
//!
//! - `config`: the scope URL; `keys`: the key layout (a hash tag per name).

mod config;
pub mod keys;

pub use config::Config;
