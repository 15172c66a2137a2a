//! latchkey's host scope: named locks shared by every process of a machine (or of one
//! namespace directory), with no daemon.
//!
//! - `sys`: the one door to the OS (open-file-description locks, futexes, the clock).
//! - `layout`: the shared-memory file, every field an atomic.
//! - `namespace`: the directory and file, checked before use, and this process's slot.
//! - `table`: finding a name's record in the namespace, and what dead processes left.
//! - `record`: one name's FIFO semaphore in shared memory, crash repair included.
//! - [`HostScope`]: all of it behind the scope contract of `latchkey-model`.

mod layout;
mod namespace;
mod record;
mod scope;
mod sys;
mod table;
mod wait;

pub use namespace::{default_dir, FILE_NAME};
pub use scope::{HostLock, HostScope};
