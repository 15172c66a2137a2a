//! The named, writer-preferring reader-writer lock.

use std::time::Duration;

use latchkey_model::{Name, Result, RWLOCK_CAPACITY};

use crate::handle::Handle;
use crate::Guard;

/// A named reader-writer lock that prefers writers.
///
/// A reader takes 1 of [`RWLOCK_CAPACITY`] permits and a writer all of them, on one FIFO
/// queue: a waiting writer holds back the readers that come after it, and the readers
/// that came before it are not starved.
///
/// # Examples
/// ```
/// let scope = latchkey::Scope::process();
/// let lock = scope.rwlock("config")?;
/// let a = lock.read_blocking()?;
/// let b = lock.read_blocking()?;
/// assert_eq!(lock.readers()?, 2);
/// assert!(lock.try_write()?.is_none());
/// drop((a, b));
/// let w = lock.write_blocking()?;
/// assert!(lock.is_write_locked()?);
/// # drop(w);
/// # Ok::<(), latchkey::Error>(())
/// ```
///
/// # Cancel safety
/// Dropping a `read` or `write` future leaves no waiter behind.
#[derive(Debug)]
pub struct RwLock {
    handle: Handle,
}

impl RwLock {
    pub(crate) fn new(handle: Handle) -> Self {
        RwLock { handle }
    }

    /// The lock's name.
    pub fn name(&self) -> &Name {
        self.handle.name()
    }

    /// Waits for a read hold.
    pub async fn read(&self) -> Result<Guard<'_>> {
        self.handle.acquire(1, None).await
    }

    /// Waits for a read hold at most `timeout`. Works on any executor.
    pub async fn read_timeout(&self, timeout: Duration) -> Result<Guard<'_>> {
        self.handle.acquire(1, Some(timeout)).await
    }

    /// Blocks for a read hold.
    pub fn read_blocking(&self) -> Result<Guard<'_>> {
        self.handle.acquire_blocking(1, None)
    }

    /// Blocks for a read hold at most `timeout`.
    pub fn read_blocking_timeout(&self, timeout: Duration) -> Result<Guard<'_>> {
        self.handle.acquire_blocking(1, Some(timeout))
    }

    /// Takes a read hold if no writer holds or waits.
    pub fn try_read(&self) -> Result<Option<Guard<'_>>> {
        self.handle.try_acquire(1)
    }

    /// The async form of [`try_read`](RwLock::try_read), for scopes over a network.
    pub async fn try_read_async(&self) -> Result<Option<Guard<'_>>> {
        self.handle.try_acquire_async(1).await
    }

    /// Waits for the write hold.
    pub async fn write(&self) -> Result<Guard<'_>> {
        self.handle.acquire(RWLOCK_CAPACITY, None).await
    }

    /// Waits for the write hold at most `timeout`. Works on any executor.
    pub async fn write_timeout(&self, timeout: Duration) -> Result<Guard<'_>> {
        self.handle.acquire(RWLOCK_CAPACITY, Some(timeout)).await
    }

    /// Blocks for the write hold.
    pub fn write_blocking(&self) -> Result<Guard<'_>> {
        self.handle.acquire_blocking(RWLOCK_CAPACITY, None)
    }

    /// Blocks for the write hold at most `timeout`.
    pub fn write_blocking_timeout(&self, timeout: Duration) -> Result<Guard<'_>> {
        self.handle.acquire_blocking(RWLOCK_CAPACITY, Some(timeout))
    }

    /// Takes the write hold if nobody holds or waits.
    pub fn try_write(&self) -> Result<Option<Guard<'_>>> {
        self.handle.try_acquire(RWLOCK_CAPACITY)
    }

    /// The async form of [`try_write`](RwLock::try_write), for scopes over a network.
    pub async fn try_write_async(&self) -> Result<Option<Guard<'_>>> {
        self.handle.try_acquire_async(RWLOCK_CAPACITY).await
    }

    /// A snapshot of the lock, on any scope without blocking the executor.
    pub async fn inspect_async(&self) -> Result<latchkey_model::State> {
        self.handle.inspect_async().await
    }

    /// How many read holds there are now.
    pub fn readers(&self) -> Result<u32> {
        let state = self.handle.inspect()?;
        Ok(if state.in_use == RWLOCK_CAPACITY { 0 } else { state.in_use })
    }

    /// How many writers wait.
    pub fn writers_waiting(&self) -> Result<usize> {
        Ok(self.handle.inspect()?.waiting_exclusive)
    }

    /// Whether a writer holds the lock.
    pub fn is_write_locked(&self) -> Result<bool> {
        Ok(self.handle.inspect()?.in_use == RWLOCK_CAPACITY)
    }
}
