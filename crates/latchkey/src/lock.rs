//! [`Lock`]: every primitive as permits out of a name's capacity, with guards that own what
//! they hold: what a binding for another language keeps in its objects.

use std::time::Duration;

use latchkey_model::{Name, Result, State};

use crate::handle::Handle;
use crate::Guard;

/// A name of a scope as the one model under every primitive: a request takes `permits` of
/// the name's `capacity` — 1 of 1 is a mutex, 1 of [`RWLOCK_CAPACITY`](crate::RWLOCK_CAPACITY)
/// a read and all of it a write, k of n a semaphore's permits — granted in arrival order.
/// Its guards are `Guard<'static>`: they borrow nothing.
///
/// ```
/// let scope = latchkey::Scope::process();
/// let lock = scope.open_lock("report", latchkey::RWLOCK_CAPACITY)?;
/// let read = lock.acquire_blocking(1, None)?;
/// assert!(lock.try_acquire(latchkey::RWLOCK_CAPACITY)?.is_none(), "a writer waits for the reader");
/// read.release()?;
/// # Ok::<(), latchkey::Error>(())
/// ```
#[derive(Debug)]
pub struct Lock {
    handle: Handle,
}

impl Lock {
    pub(crate) fn new(handle: Handle) -> Lock {
        Lock { handle }
    }

    /// The lock's name.
    pub fn name(&self) -> &Name {
        self.handle.name()
    }

    /// How many permits the name has.
    pub fn capacity(&self) -> u32 {
        self.handle.capacity()
    }

    /// Takes `permits` if they are free and nobody waits.
    pub fn try_acquire(&self, permits: u32) -> Result<Option<Guard<'static>>> {
        self.handle.try_acquire_owned(permits)
    }

    /// Blocks for `permits`, at most `timeout` if one is given (then a `Timeout` error).
    pub fn acquire_blocking(&self, permits: u32, timeout: Option<Duration>) -> Result<Guard<'static>> {
        self.handle.acquire_blocking_owned(permits, timeout)
    }

    /// Waits for `permits`, at most `timeout` if one is given; dropping the future withdraws
    /// the request. Works on any executor.
    pub async fn acquire(&self, permits: u32, timeout: Option<Duration>) -> Result<Guard<'static>> {
        self.handle.acquire_owned(permits, timeout).await
    }

    /// A snapshot of the name: holders, permits in use, waiters.
    pub fn inspect(&self) -> Result<State> {
        self.handle.inspect()
    }

    /// The async form of [`inspect`](Lock::inspect).
    pub async fn inspect_async(&self) -> Result<State> {
        self.handle.inspect_async().await
    }
}
