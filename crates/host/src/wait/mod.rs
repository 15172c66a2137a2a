//! Waiting for a grant: the blocking loop, the async future, the one thread per namespace
//! that sleeps for every async wait of the process (`mux`), and the one that watches the
//! processes the waits depend on (`watch`). A scope owns them, one of each per namespace.

mod blocking;
mod future;
mod mux;
mod watch;

use std::io;

pub(crate) use blocking::{wait_blocking, withdraw as withdraw_request};
pub(crate) use future::Queued;

/// The threads that serve the waits of one namespace in this process.
pub(crate) struct Waits {
    watcher: watch::Watcher,
    mux: mux::Mux,
}

impl Waits {
    pub(crate) fn new() -> io::Result<Waits> {
        Ok(Waits { watcher: watch::Watcher::new()?, mux: mux::Mux::default() })
    }
}
