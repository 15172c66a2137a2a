//! latchkey's host scope: named locks shared by every process of a machine (or of one
//! namespace directory), with no daemon.
//!
//! The modules form layers; each uses only those above it in this list:
//!
//! - `sys`: the one door to the operating system (futexes, OFD locks, files, mappings,
//!   pidfds, the fork and bus-error handlers);
//! - `layout`: the namespace file, every field an atomic; `crash`: named crash points;
//! - `shm`: typed, bounds-checked access to the mapped file, and liveness of a slot;
//! - `protocol`: one name's fair semaphore: the record lock, grants, the queue, releases,
//!   repair after a crash; its invariants are documented there;
//! - `namespace`: the directory and file, process slots, this process's entries;
//! - `table`: finding, adding and reclaiming names;
//! - `wait`: blocking and async waits, and the threads that serve them;
//! - [`HostScope`] and [`HostLock`]: all of it behind the scope contract of
//!   `latchkey-model`.

// Under loom only the protocol is built: much of the rest goes unused.
#![cfg_attr(loom, allow(dead_code, unused_imports))]

#[macro_use]
mod crash;
mod layout;
mod protocol;
#[cfg(not(loom))]
mod shm;
#[cfg(loom)]
#[path = "shm_model.rs"]
mod shm;
mod sync;
mod sys;

// Above the protocol: files, processes, threads. (Under loom only the protocol is built,
// and model-checked in `model`.)
#[cfg(not(loom))]
mod handle;
#[cfg(all(test, loom))]
mod model;
#[cfg(not(loom))]
mod namespace;
#[cfg(not(loom))]
mod scope;
#[cfg(not(loom))]
mod table;
#[cfg(all(test, not(loom)))]
mod tests;
#[cfg(not(loom))]
mod wait;

#[cfg(not(loom))]
pub use handle::HostLock;
#[cfg(not(loom))]
pub use namespace::{default_dir, FILE_NAME};
#[cfg(not(loom))]
pub use scope::HostScope;
