//! The named counting semaphore.

use std::time::Duration;

use latchkey_model::{Name, Result};

use crate::handle::Handle;
use crate::Guard;

/// A named semaphore of n permits; each request takes k of them, in FIFO order (a large
/// request at the head holds back smaller ones behind it, so it is never starved).
///
/// Opening the same name with another n is a `CapacityMismatch` error.
///
/// # Examples
/// ```
/// let scope = latchkey::Scope::process();
/// let gpus = scope.semaphore("gpu", 4)?;
/// let two = gpus.acquire_blocking(2)?;
/// let one = gpus.acquire_blocking(1)?;
/// assert_eq!(gpus.available()?, 1);
/// assert!(gpus.try_acquire(2)?.is_none());
/// # drop((one, two));
/// # Ok::<(), latchkey::Error>(())
/// ```
#[derive(Debug)]
pub struct Semaphore {
    handle: Handle,
}

impl Semaphore {
    pub(crate) fn new(handle: Handle) -> Self {
        Semaphore { handle }
    }

    /// The semaphore's name.
    pub fn name(&self) -> &Name {
        self.handle.name()
    }

    /// The number of permits, n.
    pub fn capacity(&self) -> u32 {
        self.handle.capacity()
    }

    /// Permits not held now.
    pub fn available(&self) -> Result<u32> {
        Ok(self.capacity() - self.handle.inspect()?.in_use)
    }

    /// Waits for `permits` permits.
    pub async fn acquire(&self, permits: u32) -> Result<Guard<'_>> {
        self.handle.acquire(permits, None).await
    }

    /// Waits for `permits` at most `timeout`. Works on any executor.
    pub async fn acquire_timeout(&self, permits: u32, timeout: Duration) -> Result<Guard<'_>> {
        self.handle.acquire(permits, Some(timeout)).await
    }

    /// Blocks for `permits` permits.
    pub fn acquire_blocking(&self, permits: u32) -> Result<Guard<'_>> {
        self.handle.acquire_blocking(permits, None)
    }

    /// Blocks for `permits` at most `timeout`.
    pub fn acquire_blocking_timeout(&self, permits: u32, timeout: Duration) -> Result<Guard<'_>> {
        self.handle.acquire_blocking(permits, Some(timeout))
    }

    /// Takes `permits` if they are free and nobody waits.
    pub fn try_acquire(&self, permits: u32) -> Result<Option<Guard<'_>>> {
        self.handle.try_acquire(permits)
    }

    /// The async form of [`try_acquire`](Semaphore::try_acquire), for scopes over a network.
    pub async fn try_acquire_async(&self, permits: u32) -> Result<Option<Guard<'_>>> {
        self.handle.try_acquire_async(permits).await
    }
}
