//! latchkey's etcd scope (work in progress, issue 10): named locks on an etcd cluster.
//!
//! So far: the scope URL, `etcd://host1:2379,host2:2379/prefix?ttl=10s`, and the key
//! layout (`keys`).

mod config;
pub mod keys;

pub use config::Config;
