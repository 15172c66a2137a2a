//! latchkey's host scope: named locks shared by every process of a machine (or of one
//! namespace directory), with no daemon.
//!
//! - `sys`: the one door to the OS (open-file-description locks, futexes, pidfds, the
//!   clock); `fork`: what a child forked without `exec` must not inherit.
//! - `layout`: the shared-memory file, every field an atomic.
//! - `namespace`: the directory and file, checked before use, and this process's slot.
//! - `table`: finding a name's record in the namespace, and what dead processes left.
//! - `record`: one name's FIFO semaphore in shared memory; `repair`: what a crash leaves
//!   in it, and the record lock.
//! - `wait` and `grant_word`: how a queued waiter sleeps and is granted or nudged;
//!   `async_wait`: the same without blocking the caller (one thread multiplexes them);
//!   `watch`: the thread that nudges waiters when a process they depend on dies.
//! - [`HostScope`]: all of it behind the scope contract of `latchkey-model`.

mod async_wait;
mod fork;
mod grant_word;
mod layout;
mod namespace;
mod record;
mod repair;
mod scope;
mod sys;
mod table;
#[cfg(test)]
mod tests;
mod wait;
mod watch;
mod word_lock;

pub use namespace::{default_dir, FILE_NAME};
pub use scope::{HostLock, HostScope};
