//! Issue 8, "the host scope, trustworthy": regression tests written against the public
//! API only (a `Scope`, its primitives, guards and `inspect`), so that they hold for any
//! implementation of the host scope.
//!
//! - `deleted`: a namespace directory deleted, or its file replaced, under a holder
//!   (item 2);
//! - `truncated`: the namespace file truncated under a holder (item 3);
//! - `limits`: no hidden limit on holders, readers, waiters, async waits, processes or
//!   names (item 5);
//! - `torture`: workers SIGKILLed a thousand times while they take a mutex, a
//!   reader-writer lock and a semaphore; exclusion, bounds, token order and progress are
//!   checked from the outside;
//! - `worker`: the jobs of the worker processes, which are this test binary run again
//!   with [`worker::ENV`] set.
//!
//! Workers talk to the test through lines on their stdout that start with `@@ `
//! (libtest prints its own text before them) and are told to go on through their stdin.
//! Every wait for a worker is bounded ([`PATIENCE`]): a hang becomes a failure that says
//! what did not happen.

mod corrupted;
mod deleted;
mod limits;
mod races;
mod torture;
mod truncated;
mod worker;

use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

pub use crate::support::worker::eventually;
use crate::support::worker::{Suite, Worker};
use crate::support::{fresh_dir, TempDir};

/// How long a test waits for a state a correct implementation reaches at once (generous:
/// two cores, and many processes).
pub const PATIENCE: Duration = Duration::from_secs(60);

/// The name of the namespace file in a namespace directory (documented; spelled out here
/// so that the tests need nothing but the public API of `latchkey`).
pub const FILE_NAME: &str = "latchkey.ns";

/// A test's directories under one temporary root, removed when dropped: `ns`, the
/// namespace directory (created by latchkey when first opened), and `files`, for the
/// test's own files.
pub struct Dirs {
    root: TempDir,
}

impl Dirs {
    pub fn new(prefix: &str) -> Dirs {
        let root = TempDir(fresh_dir(prefix));
        std::fs::create_dir_all(root.join("files")).expect("create the test's directory");
        Dirs { root }
    }

    /// The namespace directory.
    pub fn ns(&self) -> PathBuf {
        self.root.join("ns")
    }

    /// `host:` and the namespace directory.
    pub fn url(&self) -> String {
        url(&self.ns())
    }

    /// The namespace file.
    pub fn file(&self) -> PathBuf {
        self.ns().join(FILE_NAME)
    }

    /// A path for the test's own files, outside the namespace directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.root.join("files").join(name)
    }

    /// Another directory under the root (for a second namespace).
    pub fn other(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }
}

pub fn url(dir: &Path) -> String {
    format!("host:{}", dir.display())
}

/// The worker entry of this suite (see `worker.rs`).
pub struct TrustSuite;

impl Suite for TrustSuite {
    const TEST: &'static str = "trust::worker::run";
    const ENV: &'static str = worker::ENV;
}

/// A worker process of this suite.
pub type Proc = Worker<TrustSuite>;

/// An exit status in words: `exit code 0`, `killed by signal 7 (SIGBUS)`.
pub fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => {
            let name = match signal {
                libc::SIGBUS => " (SIGBUS)",
                libc::SIGSEGV => " (SIGSEGV)",
                libc::SIGKILL => " (SIGKILL)",
                libc::SIGABRT => " (SIGABRT)",
                _ => "",
            };
            format!("killed by signal {signal}{name}")
        }
        _ => format!("{status:?}"),
    }
}
