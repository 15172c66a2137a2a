//! A second adversarial review of the host scope, after the fixes of the first: each
//! test here shows one bug, and fails on the code it was written against.
//!
//! - `deleted`: a namespace deleted under a process whose watcher has no inotify, and a
//!   release in a lost namespace;
//! - `threads`: the helper threads of a namespace without `futex_waitv`;
//! - `signals`: a SIGBUS that is not a fault of a namespace mapping;
//! - `pids`: a pid reused while a newcomer claims a dead process's slot;
//! - `seccomp`: a system call made to fail in a worker;
//! - `worker`: the jobs of the worker processes (this binary run again).
//!
//! Workers report through lines on stdout that start with `@@ `, and read lines on
//! stdin; every wait for one is bounded.

mod deleted;
mod pids;
mod seccomp;
mod signals;
mod threads;
mod worker;

use crate::support::worker::{Suite, Worker};
pub use crate::trust::{Dirs, PATIENCE};

/// The worker entry of this suite (see `worker.rs`).
pub struct Review2Suite;

impl Suite for Review2Suite {
    const TEST: &'static str = "review2::worker::run";
    const ENV: &'static str = worker::ENV;
}

/// A worker process of this suite.
pub type Proc = Worker<Review2Suite>;
