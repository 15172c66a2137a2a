//! The named mutex.

use std::time::Duration;

use latchkey_model::{Name, Result};

use crate::handle::Handle;
use crate::Guard;

/// A named mutual-exclusion lock: one permit out of one.
///
/// # Examples
/// ```
/// let scope = latchkey::Scope::process();
/// let mutex = scope.mutex("db-migrations")?;
/// let guard = mutex.lock_blocking()?;
/// assert!(mutex.is_locked()?);
/// assert!(mutex.try_lock()?.is_none());
/// println!("fencing token {}", guard.fencing_token());
/// guard.release()?;
/// # Ok::<(), latchkey::Error>(())
/// ```
///
/// # Cancel safety
/// Dropping a `lock` future leaves no waiter behind; a grant that raced with the drop
/// goes to the next waiter.
///
/// Grants are first come, first served. For a lock on a value in memory that no other
/// process needs, `parking_lot::Mutex` or `tokio::sync::Mutex` are simpler.
#[derive(Debug)]
pub struct Mutex {
    handle: Handle,
}

impl Mutex {
    pub(crate) fn new(handle: Handle) -> Self {
        Mutex { handle }
    }

    /// The lock's name.
    pub fn name(&self) -> &Name {
        self.handle.name()
    }

    /// Waits for the lock.
    pub async fn lock(&self) -> Result<Guard<'_>> {
        self.handle.acquire(1, None).await
    }

    /// Waits for the lock at most `timeout`, then fails with `Timeout`. Works on any executor.
    pub async fn lock_timeout(&self, timeout: Duration) -> Result<Guard<'_>> {
        self.handle.acquire(1, Some(timeout)).await
    }

    /// Blocks the thread until the lock is granted. Needs no async runtime.
    #[inline]
    pub fn lock_blocking(&self) -> Result<Guard<'_>> {
        self.handle.acquire_blocking(1, None)
    }

    /// Blocks the thread at most `timeout`, then fails with `Timeout`.
    pub fn lock_blocking_timeout(&self, timeout: Duration) -> Result<Guard<'_>> {
        self.handle.acquire_blocking(1, Some(timeout))
    }

    /// Takes the lock if it is free and nobody waits; `None` otherwise.
    #[inline]
    pub fn try_lock(&self) -> Result<Option<Guard<'_>>> {
        self.handle.try_acquire(1)
    }

    /// The async form of [`try_lock`](Mutex::try_lock), for scopes over a network.
    pub async fn try_lock_async(&self) -> Result<Option<Guard<'_>>> {
        self.handle.try_acquire_async(1).await
    }

    /// Whether anybody holds the lock.
    pub fn is_locked(&self) -> Result<bool> {
        Ok(self.handle.inspect()?.is_locked())
    }

    /// The async form of [`is_locked`](Mutex::is_locked).
    pub async fn is_locked_async(&self) -> Result<bool> {
        Ok(self.handle.inspect_async().await?.is_locked())
    }
}
