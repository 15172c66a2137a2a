//! An adversarial review of the host scope: each test here shows one bug, and fails on
//! the code it was written against.
//!
//! - `deleted`: a namespace deleted under a process that goes on granting in it;
//! - `forked`: a scope used in a forked child;
//! - `threads`: waits that hang when the helper threads of a namespace cannot start;
//! - `corrupted`: a corrupted namespace file that makes latchkey panic;
//! - `shared`: a namespace shared by the members of a group;
//! - `races`: interleavings between processes, forced by stopping a process at a system
//!   call with ptrace;
//! - `wakeups`: a nudge half made by a process that died, and the sleeper never woken;
//! - `worker`: the jobs of the worker processes (this binary run again).
//!
//! Workers report through lines on stdout that start with `@@ `, and read lines on
//! stdin; every wait for one is bounded.

mod corrupted;
mod deleted;
mod forked;
pub(crate) mod races;
mod shared;
mod threads;
mod wakeups;
mod worker;

pub use crate::support::worker::eventually;
use crate::support::worker::{Suite, Worker};
pub use crate::trust::{Dirs, PATIENCE};

/// The worker entry of this suite (see `worker.rs`).
pub struct ReviewSuite;

impl Suite for ReviewSuite {
    const TEST: &'static str = "review::worker::run";
    const ENV: &'static str = worker::ENV;
}

/// A worker process of this suite.
pub type Proc = Worker<ReviewSuite>;
