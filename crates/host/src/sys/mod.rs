//! The one door to the operating system. Linux only; another platform adds its own
//! version of this module.
//!
//! - `futex`: sleeping on a word of the shared mapping, and waking its sleepers;
//! - `lock`: open-file-description byte locks (liveness), and the directory's BSD lock;
//! - `file`: the namespace directory and file, their identity, making a file complete
//!   before it can be seen;
//! - `maps`: mapping the file, and what a fork or a bus error must do to the mappings;
//! - `process`: pidfds, inotify, `poll`, the clocks.

#[cfg(not(loom))]
pub(crate) mod file;
pub(crate) mod futex;
#[cfg(not(loom))]
pub(crate) mod lock;
#[cfg(not(loom))]
pub(crate) mod maps;
#[cfg(not(loom))]
pub(crate) mod process;

#[cfg(not(loom))]
pub(crate) use process::now_ns;

/// Under loom, no clock: the protocol's times are for `inspect` only.
#[cfg(loom)]
pub(crate) mod process {
    pub(crate) fn coarse_now_ns() -> u64 {
        0
    }
}
