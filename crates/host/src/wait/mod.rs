//! Waiting for a grant: the blocking loop, the async future, the one thread per namespace
//! that sleeps for every async wait of the process (`mux`), and the one that watches the
//! processes the waits depend on (`watch`). A scope owns them, one of each per namespace.

mod blocking;
mod future;
mod lost;
mod mux;
mod watch;

use std::io;
use std::sync::Arc;

pub(crate) use blocking::{wait_blocking, withdraw as withdraw_request};
pub(crate) use future::Queued;
pub(crate) use lost::Lost;

use crate::namespace::Namespace;

/// The threads that serve the waits of one namespace in this process.
pub(crate) struct Waits {
    watcher: watch::Watcher,
    pub(crate) mux: mux::Mux,
}

impl Waits {
    /// Starts the threads of `ns` at once, when the namespace is opened: the watcher also
    /// watches the file for deletion, and a process that later cannot start a thread (a
    /// limit on threads or address space) still has them. If one cannot start, waits do
    /// without it: the watcher's waits check every 20 ms, and async waits fail with
    /// `Unavailable`.
    pub(crate) fn new(ns: &Arc<Namespace>) -> io::Result<Waits> {
        Ok(Waits { watcher: watch::Watcher::start(ns)?, mux: mux::Mux::start(ns) })
    }
}
