//! A namespace: its directory and file, checked and mapped; this process's slot in it and
//! the entries of its arena; the file's identity, checked again on every slow path.
//!
//! - `location`: the default directory, and what makes a directory safe;
//! - `file`: making, checking and mapping the file;
//! - `slots`: taking a process slot, and cleaning up after a dead process;
//! - `arena`: this process's entries;
//! - `grow`: more space at the end of the file.

mod arena;
mod file;
mod grow;
mod location;
mod slots;

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use latchkey_model::{Error, ErrorKind, Result};

pub use file::FILE_NAME;
pub use location::default_dir;

use crate::layout::{starts_a_chunk, SLOT_BASE};
use crate::shm::Shm;
use crate::sync::atomic::Ordering;
use crate::sys;
use crate::sys::file::Stat;
use arena::Arena;

/// An open namespace: the file mapped into memory, and this process's slot in it.
pub(crate) struct Namespace {
    pub(crate) shm: Shm,
    url: String,
    dir: PathBuf,
    path: PathBuf,
    /// The file's identity when it was opened: a file found at the path later with
    /// another identity means this one was deleted or replaced.
    identity: Stat,
    arena: Arena,
    /// The names this process has open, by record: the entry that says so in the record's
    /// `users`, the record's generation, and how many handles share it.
    pub(crate) open_names: Mutex<HashMap<u32, OpenName>>,
    /// This process's pid namespace (see `sys::process::pid_namespace`).
    pid_ns: u32,
    /// The fork count it was opened under (see `sys::maps`).
    fork_generation: u32,
    /// Whether a watcher thread watches the file with inotify (set by `wait::watch`):
    /// if not, the file's identity is checked on every grant instead.
    watched: std::sync::atomic::AtomicBool,
}

/// A name this process has open.
#[derive(Clone, Copy, Debug)]
pub(crate) struct OpenName {
    pub entry: u32,
    pub generation: u32,
    pub handles: usize,
}

impl Namespace {
    /// Opens the namespace in `dir`, or in the per-user default directory, creating it if
    /// needed, and takes a process slot.
    pub(crate) fn open(dir: Option<&Path>) -> Result<Namespace> {
        let (dir, url, private) = match dir {
            Some(dir) => (dir.to_path_buf(), format!("host:{}", dir.display()), false),
            None => (default_dir(), "host:".to_string(), true),
        };
        let fail = |(kind, message): location::Failure| Error::new(kind, message).with_scope(url.clone());
        let dir_fd = location::prepare_dir(&dir, private).map_err(fail)?;
        let path = dir.join(FILE_NAME);
        let pid_ns = sys::process::pid_namespace();
        // From the open to the registration, a fork() in another thread waits (see `sys::maps`).
        let gate = sys::maps::gate();
        let file = file::open_or_create(&dir_fd, &path, private).map_err(fail)?;
        let identity = sys::file::stat_fd(file.as_fd())
            .map_err(|e| fail((location::kind_of(&e), format!("cannot read {}: {e}", path.display()))))?;
        let (map, mapped) = file::map(&file, &path).map_err(fail)?;
        let registration = sys::maps::register(
            &gate,
            std::os::fd::AsRawFd::as_raw_fd(&file),
            std::os::fd::AsRawFd::as_raw_fd(&dir_fd),
            map,
            mapped,
        );
        let Some(registration) = registration else {
            // SAFETY: the mapping just made, used by nothing.
            unsafe { sys::maps::unmap(map, mapped) };
            let why = format!("this process has {} namespaces open, the most it can", sys::maps::REGISTRATIONS);
            return Err(fail((ErrorKind::Unavailable, why)));
        };
        drop(gate);
        let shm = Shm::new(file, dir_fd, map, mapped, registration);
        let namespace = Namespace {
            shm,
            url,
            dir,
            path,
            identity,
            arena: Arena::default(),
            open_names: Mutex::default(),
            pid_ns,
            fork_generation: sys::maps::generation(),
            watched: std::sync::atomic::AtomicBool::new(false),
        };
        if namespace.shm.header().file_len.load(Ordering::Acquire) > mapped as u64 {
            let why = format!("the namespace file is larger than this process can map ({mapped} bytes)");
            return Err(namespace.error(ErrorKind::Unavailable, why, None));
        }
        let scoped = |e: Error| e.with_scope(namespace.url.clone());
        namespace.claim_slot().map_err(scoped)?;
        namespace.collect_free_entries().map_err(scoped)?;
        Ok(namespace)
    }

    /// The scope URL: `host:` or `host:/dir`.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// The namespace directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether this process opened the namespace: not a copy in a child forked since.
    #[inline]
    pub(crate) fn is_ours(&self) -> bool {
        self.fork_generation == sys::maps::generation()
    }

    /// The error for `name` (if any) in this namespace.
    pub(crate) fn error(&self, kind: ErrorKind, message: impl Into<String>, name: Option<&str>) -> Error {
        let error = Error::new(kind, message).with_scope(self.url.clone());
        match name {
            Some(name) => error.with_name(name),
            None => error,
        }
    }

    /// The error for using a copy of the namespace in a forked child.
    pub(crate) fn forked_error(&self, name: Option<&str>) -> Error {
        let message = "this handle was opened before fork(), by the parent process; open the scope again in the child";
        self.error(ErrorKind::HandleLost, message, name)
    }

    /// Whether the file at the namespace path is still the one mapped, whole. If not, the
    /// namespace is marked lost: nothing is granted in it any more, and its holds report
    /// `HandleLost`. (A system call or two: for slow paths.)
    pub(crate) fn verify_identity(&self) -> bool {
        if self.shm.is_lost() {
            return false;
        }
        // The length first: the file grows before its header says so, never after.
        let len = self.shm.len();
        let intact = match (sys::file::stat_path(&self.path), sys::file::stat_fd(self.shm.file().as_fd())) {
            (Ok(at_path), Ok(mapped)) => at_path.same_file(&self.identity) && mapped.nlink > 0 && mapped.size >= len,
            (Ok(at_path), Err(_)) => at_path.same_file(&self.identity),
            // Only a path that is gone is a sign of deletion (not, say, no memory).
            (Err(e), _) => !matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)),
        };
        if !intact {
            self.shm.registration().set_lost();
        }
        intact
    }

    /// Whether a thread watches the file with inotify (see `watched`).
    pub(crate) fn is_watched(&self) -> bool {
        self.watched.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Records that a thread watches the file with inotify (see `watched`).
    pub(crate) fn set_watched(&self) {
        self.watched.store(true, std::sync::atomic::Ordering::Release);
    }

    /// Whether a grant may be made in this namespace: it is not lost, and, where no
    /// thread watches the file (no inotify: a per-user limit reached, say), the file at
    /// the path is still the one mapped, checked now (two system calls).
    #[inline]
    pub(crate) fn may_grant(&self) -> bool {
        !self.shm.is_lost() && (self.watched.load(std::sync::atomic::Ordering::Relaxed) || self.verify_identity())
    }

    /// The pid of the process in `slot` (0 if unknown), as seen in its own pid namespace.
    pub(crate) fn pid_of(&self, slot: u32) -> u32 {
        self.shm.slot(slot).map_or(0, |s| s.pid.load(Ordering::SeqCst))
    }

    /// Whether a process may be taking `slot` (its pid not written yet): counted in the
    /// slot, or, for the first slot of a chunk, adding the chunk.
    pub(crate) fn claiming(&self, slot: u32) -> bool {
        let Ok(s) = self.shm.slot(slot) else { return true };
        s.claimers.load(Ordering::SeqCst) != 0
            || (starts_a_chunk(slot, SLOT_BASE) && self.shm.header().slot_growers.load(Ordering::SeqCst) != 0)
    }

    /// Whether the process in `slot` is in our pid namespace, so its pid means the same.
    pub(crate) fn shares_pid_namespace_with(&self, slot: u32) -> bool {
        self.pid_ns != 0 && self.shm.slot(slot).is_ok_and(|s| s.pid_ns.load(Ordering::Acquire) == self.pid_ns)
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        // Every handle, guard and wait keeps the namespace alive, so nothing of ours is
        // left in the file; the next owner of the slot checks anyway. (A copy in a forked
        // child leaves the slot to its owner.)
        if self.is_ours() && self.shm.me() != crate::shm::NO_SLOT && !self.shm.is_lost() {
            if let Ok(slot) = self.shm.slot(self.shm.me()) {
                slot.in_use.store(0, Ordering::Release);
            }
        }
    }
}
