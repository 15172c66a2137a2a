//! The interval lock: a mutex whose holder cedes to waiters after a time slice.

use std::ops::Deref;
use std::time::{Duration, Instant};

use latchkey_model::{Name, Result};

use crate::handle::Handle;
use crate::Guard;

/// A named mutex whose holder gives way to waiters once it has held the lock for
/// `interval`, so that a long job shares a resource in turns.
///
/// Call [`IntervalGuard::poll`] between units of work: it hands the lock to the head of
/// the queue and waits again at the back only when the interval has passed and somebody
/// waits. [`IntervalGuard::cede`] does so whatever the time.
///
/// # Examples
/// ```
/// use std::time::Duration;
/// let scope = latchkey::Scope::process();
/// let lock = scope.interval_lock("batch", Duration::from_millis(50))?;
/// let mut guard = lock.lock_blocking()?;
/// for _unit in 0..3 {
///     // ... one unit of work ...
///     guard = guard.poll_blocking()?; // nobody waits here, so the lock is kept
/// }
/// # Ok::<(), latchkey::Error>(())
/// ```
///
/// # Cancel safety
/// Dropping a `lock` future leaves no waiter behind; dropping a `cede` or `poll` future
/// gives the lock up.
#[derive(Debug)]
pub struct IntervalLock {
    handle: Handle,
    interval: Duration,
}

/// A held [`IntervalLock`].
#[must_use = "if unused the lock is released at once"]
#[derive(Debug)]
pub struct IntervalGuard<'a> {
    guard: Guard<'a>,
    interval: Duration,
    granted_at: Instant,
}

impl IntervalLock {
    pub(crate) fn new(handle: Handle, interval: Duration) -> Self {
        IntervalLock { handle, interval }
    }

    /// The lock's name.
    pub fn name(&self) -> &Name {
        self.handle.name()
    }

    /// How long a holder keeps the lock before [`IntervalGuard::poll`] cedes it.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Waits for the lock.
    pub async fn lock(&self) -> Result<IntervalGuard<'_>> {
        Ok(self.wrap(self.handle.acquire(1, None).await?))
    }

    /// Waits for the lock at most `timeout`. Works on any executor.
    pub async fn lock_timeout(&self, timeout: Duration) -> Result<IntervalGuard<'_>> {
        Ok(self.wrap(self.handle.acquire(1, Some(timeout)).await?))
    }

    /// Blocks for the lock.
    pub fn lock_blocking(&self) -> Result<IntervalGuard<'_>> {
        Ok(self.wrap(self.handle.acquire_blocking(1, None)?))
    }

    /// Blocks for the lock at most `timeout`.
    pub fn lock_blocking_timeout(&self, timeout: Duration) -> Result<IntervalGuard<'_>> {
        Ok(self.wrap(self.handle.acquire_blocking(1, Some(timeout))?))
    }

    /// Takes the lock if it is free and nobody waits.
    pub fn try_lock(&self) -> Result<Option<IntervalGuard<'_>>> {
        Ok(self.handle.try_acquire(1)?.map(|guard| self.wrap(guard)))
    }

    /// The async form of [`try_lock`](IntervalLock::try_lock), for scopes over a network.
    pub async fn try_lock_async(&self) -> Result<Option<IntervalGuard<'_>>> {
        Ok(self.handle.try_acquire_async(1).await?.map(|guard| self.wrap(guard)))
    }

    /// Whether anybody holds the lock.
    pub fn is_locked(&self) -> Result<bool> {
        Ok(self.handle.inspect()?.is_locked())
    }

    fn wrap<'a>(&self, guard: Guard<'a>) -> IntervalGuard<'a> {
        IntervalGuard { guard, interval: self.interval, granted_at: Instant::now() }
    }
}

impl<'a> IntervalGuard<'a> {
    /// When the current grant began.
    pub fn granted_at(&self) -> Instant {
        self.granted_at
    }

    /// Whether the interval since the current grant has passed.
    pub fn is_due(&self) -> bool {
        self.granted_at.elapsed() >= self.interval
    }

    /// If anybody waits, hands the lock to the head of the queue and waits again at the
    /// back; if nobody waits, keeps it. A new grant has a new fencing token.
    pub async fn cede(self) -> Result<Self> {
        let held = self.guard.fencing_token();
        let guard = self.guard.cede().await?;
        Ok(IntervalGuard::regranted(guard, held, self.interval, self.granted_at))
    }

    /// The blocking form of [`cede`](IntervalGuard::cede).
    pub fn cede_blocking(self) -> Result<Self> {
        let held = self.guard.fencing_token();
        let guard = self.guard.cede_blocking()?;
        Ok(IntervalGuard::regranted(guard, held, self.interval, self.granted_at))
    }

    /// Cedes as [`cede`](IntervalGuard::cede) does, but only once the interval has passed.
    pub async fn poll(self) -> Result<Self> {
        if self.is_due() {
            self.cede().await
        } else {
            Ok(self)
        }
    }

    /// The blocking form of [`poll`](IntervalGuard::poll).
    pub fn poll_blocking(self) -> Result<Self> {
        if self.is_due() {
            self.cede_blocking()
        } else {
            Ok(self)
        }
    }

    /// Releases the lock, reporting failure.
    pub fn release(self) -> Result<()> {
        self.guard.release()
    }

    /// A guard after a cede: a new grant (a new token) starts a new interval.
    fn regranted(guard: Guard<'a>, held_token: u64, interval: Duration, granted_at: Instant) -> Self {
        let granted_at = if guard.fencing_token() != held_token { Instant::now() } else { granted_at };
        IntervalGuard { guard, interval, granted_at }
    }
}

impl<'a> Deref for IntervalGuard<'a> {
    type Target = Guard<'a>;
    fn deref(&self) -> &Guard<'a> {
        &self.guard
    }
}
