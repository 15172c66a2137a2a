//! latchkey's etcd scope: named locks shared by the machines of a fleet, on an etcd
//! cluster (`etcd://host1:2379,host2:2379/prefix?ttl=10s`).
//!
//! - `config`: the scope URL; `keys`: the key layout (no name under another's prefix);
//! - `queue`: a name's requests and the one rule that grants them (FIFO by create revision);
//! - `session`: the one lease per scope and its keep-alive;
//! - `shared`: the etcd calls, on the scope's own thread (`latchkey_remote::Driver`);
//! - `lock` and `scope`: the scope contract of `latchkey-model`.

mod config;
pub mod keys;
mod lock;
mod queue;
mod scope;
mod session;
mod shared;

pub use config::Config;
pub use lock::EtcdLock;
pub use scope::EtcdScope;
