//! The process scope: the registry of names, by handle and by name.

use std::sync::Arc;
use std::time::Instant;

use latchkey_model::{describe_capacity, Error, ErrorKind, Name, Result, State};

use crate::registry::Registry;
use crate::{Handle, Permit};

/// The URL of the process scope.
pub const URL: &str = "process:";

/// The threads and async tasks of one process.
///
/// Each `ProcessScope` is its own namespace; the `latchkey` crate keeps one for the
/// whole process behind `process:`.
///
/// `inspect` reports the holders of a name as one [`Holder`](latchkey_model::Holder)
/// with this process's pid and the permits in use: telling holders apart would cost the
/// uncontended path.
#[derive(Default)]
pub struct ProcessScope {
    registry: Arc<Registry>,
}

impl ProcessScope {
    /// A new, empty scope.
    pub fn new() -> Self {
        ProcessScope::default()
    }

    /// Opens `name` with `capacity` permits. Fails with `InvalidName`, or with
    /// `CapacityMismatch` while the name is in use with another capacity.
    pub fn open(&self, name: &str, capacity: u32) -> Result<Handle> {
        check_capacity(name, capacity)?;
        self.registry.open(name, capacity).map_err(|e| e.with_scope(URL))
    }

    /// Takes `permits` of `name` (opened with `capacity`) if they are free and nobody
    /// waits, without opening a handle: a name this thread used recently is found
    /// without taking any lock.
    #[inline]
    pub fn try_acquire(&self, name: &str, capacity: u32, permits: u32) -> Result<Option<Permit>> {
        check_request(name, capacity, permits)?;
        let hash = self.registry.hash(name);
        match self.registry.try_acquire_cached(name, hash, capacity, permits) {
            Some(permit) => Ok(Some(permit)),
            None => self.try_acquire_registered(name, hash, capacity, permits),
        }
    }

    /// The lock-free part of [`try_acquire`](Self::try_acquire): `None` if `name` is not
    /// in this thread's cache, or the permits are not free now. `permits` must be 1 to
    /// `capacity`.
    #[inline]
    pub fn try_acquire_cached(&self, name: &str, capacity: u32, permits: u32) -> Option<Permit> {
        debug_assert!(permits >= 1 && permits <= capacity);
        self.registry.try_acquire_cached(name, self.registry.hash(name), capacity, permits)
    }

    #[cold]
    fn try_acquire_registered(&self, name: &str, hash: u64, capacity: u32, permits: u32) -> Result<Option<Permit>> {
        self.registry.acquire_registered(name, hash, capacity, permits).map_err(|e| e.with_scope(URL))
    }

    /// Blocks for `permits` of `name` (opened with `capacity`) in FIFO order, until
    /// `deadline` if one is given (`Timeout` after it).
    #[inline]
    pub fn acquire_blocking(
        &self,
        name: &str,
        capacity: u32,
        permits: u32,
        deadline: Option<Instant>,
    ) -> Result<Permit> {
        match self.try_acquire(name, capacity, permits)? {
            Some(permit) => Ok(permit),
            None => self.open(name, capacity)?.acquire_blocking(permits, deadline),
        }
    }

    /// Waits for `permits` of `name` (opened with `capacity`) in FIFO order.
    pub async fn acquire(&self, name: &str, capacity: u32, permits: u32) -> Result<Permit> {
        match self.try_acquire(name, capacity, permits)? {
            Some(permit) => Ok(permit),
            None => self.open(name, capacity)?.acquire(permits).await,
        }
    }

    /// A snapshot of `name`; a name that is not registered is [`State::idle`].
    pub fn inspect(&self, name: &str) -> Result<State> {
        let name = Name::new(name).map_err(|e| e.with_scope(URL))?;
        Ok(match self.registry.get(name.as_str()) {
            Some(entry) => entry.state(),
            None => State::idle(name),
        })
    }

    /// Snapshots of every name that is held or waited for, sorted by name.
    pub fn list(&self) -> Vec<State> {
        let mut states: Vec<State> = self
            .registry
            .entries()
            .iter()
            .map(|entry| entry.state())
            .filter(|state| state.in_use > 0 || state.waiters > 0)
            .collect();
        states.sort_by(|a, b| a.name.cmp(&b.name));
        states
    }

    /// How many names are registered, including unused ones not yet reclaimed.
    pub fn registered_names(&self) -> usize {
        self.registry.len()
    }

    /// Reclaims every unused name now, instead of when the registry next grows.
    pub fn compact(&self) {
        self.registry.compact();
    }
}

impl std::fmt::Debug for ProcessScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessScope").field("registered_names", &self.registered_names()).finish()
    }
}

/// The `Timeout` error of `name`.
pub(crate) fn timeout(name: &str) -> Error {
    Error::new(ErrorKind::Timeout, "the deadline passed before the lock was granted").with_name(name).with_scope(URL)
}

fn check_capacity(name: &str, capacity: u32) -> Result<()> {
    if capacity == 0 {
        return Err(Error::new(ErrorKind::Unsupported, "a lock needs a capacity of at least 1 permit")
            .with_name(name)
            .with_scope(URL));
    }
    Ok(())
}

/// Checks that `permits` fit in `capacity`.
#[inline]
pub(crate) fn check_request(name: &str, capacity: u32, permits: u32) -> Result<()> {
    if permits == 0 || permits > capacity {
        return Err(request_error(name, capacity, permits));
    }
    Ok(())
}

#[cold]
fn request_error(name: &str, capacity: u32, permits: u32) -> Error {
    Error::new(ErrorKind::CapacityMismatch, format!("asked for {permits} permits of {}", describe_capacity(capacity)))
        .with_name(name)
        .with_scope(URL)
}
