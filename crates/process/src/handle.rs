//! Handles: names resolved in the registry, counted as in use while open.

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use latchkey_model::{block_on_until, Name, Result, State};

use crate::registry::{Entry, Registry};
use crate::scope::{check_request, timeout};
use crate::Permit;

/// An open name of a [`ProcessScope`](crate::ProcessScope). While it is open the name
/// keeps its capacity, and opening it with another is a `CapacityMismatch` error.
pub struct Handle {
    entry: Arc<Entry>,
    _registry: Arc<Registry>,
}

impl Handle {
    pub(crate) fn new(entry: Arc<Entry>, registry: Arc<Registry>) -> Self {
        Handle { entry, _registry: registry }
    }

    /// The name.
    pub fn name(&self) -> &Name {
        &self.entry.name
    }

    /// The number of permits of the name.
    pub fn capacity(&self) -> u32 {
        self.entry.semaphore.capacity()
    }

    /// Takes `permits` if they are free and nobody waits; `None` otherwise. Asking for
    /// 0 or more than the capacity is a `CapacityMismatch` error.
    #[inline]
    pub fn try_acquire(&self, permits: u32) -> Result<Option<Permit>> {
        check_request(self.entry.name.as_str(), self.capacity(), permits)?;
        Ok(Permit::try_acquire(&self.entry, permits))
    }

    /// Waits in FIFO order for `permits`.
    ///
    /// Cancel safety: dropping the future leaves no waiter behind, and a grant that
    /// raced with the drop goes on to the next waiter.
    pub async fn acquire(&self, permits: u32) -> Result<Permit> {
        if let Some(permit) = self.try_acquire(permits)? {
            return Ok(permit);
        }
        let token = self.entry.semaphore.acquire(permits).await.expect("an acquire ends in a grant");
        Ok(Permit::granted(&self.entry, permits, token))
    }

    /// Blocks in FIFO order for `permits`, until `deadline` if one is given (a
    /// `Timeout` error after it).
    #[inline]
    pub fn acquire_blocking(&self, permits: u32, deadline: Option<Instant>) -> Result<Permit> {
        match self.try_acquire(permits)? {
            Some(permit) => Ok(permit),
            None => self.acquire_blocking_slow(permits, deadline),
        }
    }

    #[cold]
    fn acquire_blocking_slow(&self, permits: u32, deadline: Option<Instant>) -> Result<Permit> {
        let token = block_on_until(self.entry.semaphore.acquire(permits), deadline)
            .ok_or_else(|| timeout(self.entry.name.as_str()))?;
        Ok(Permit::granted(&self.entry, permits, token.expect("an acquire ends in a grant")))
    }

    /// A snapshot of the name.
    pub fn state(&self) -> State {
        self.entry.state()
    }

    pub(crate) fn entry(&self) -> &Arc<Entry> {
        &self.entry
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.entry.users.fetch_sub(1, Ordering::Release);
    }
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle").field("name", &self.entry.name).field("semaphore", &self.entry.semaphore).finish()
    }
}
