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

#[macro_use]
mod crash;
mod handle;
mod layout;
mod namespace;
mod protocol;
mod scope;
mod shm;
mod sync;
mod sys;
mod table;
#[cfg(test)]
mod tests;
mod wait;

pub use handle::HostLock;
pub use namespace::{default_dir, FILE_NAME};
pub use scope::HostScope;
