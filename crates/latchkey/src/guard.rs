//! Guards: held locks.

use std::fmt;

use latchkey_model::{Error, ErrorKind, Lease, Name, RawLock, Result};

/// A held lock: a mutex, a read or write hold of a reader-writer lock, or permits of a
/// semaphore.
///
/// Dropping the guard releases the lock; [`release`](Guard::release) does the same and
/// reports failure.
#[must_use = "if unused the lock is released at once"]
pub struct Guard<'a> {
    lock: &'a dyn RawLock,
    /// `None` only between giving the lease away and dropping the guard.
    lease: Option<Lease>,
}

impl<'a> Guard<'a> {
    pub(crate) fn new(lock: &'a dyn RawLock, lease: Lease) -> Self {
        Guard { lock, lease: Some(lease) }
    }

    /// The fencing token of this grant: strictly greater than that of every earlier grant
    /// of the name in the scope. Pass it to the guarded resource, which rejects tokens
    /// lower than the highest it has seen.
    pub fn fencing_token(&self) -> u64 {
        self.lease().token()
    }

    /// How many permits the guard holds.
    pub fn permits(&self) -> u32 {
        self.lease().permits()
    }

    /// The lock's name.
    pub fn name(&self) -> &Name {
        self.lock.name()
    }

    /// The URL of the lock's scope.
    pub fn scope(&self) -> &str {
        self.lock.scope_url()
    }

    /// `Ok` while the hold is intact; a `HandleLost` error once the scope took it away
    /// (distributed scopes only: a lease expired, a connection dropped).
    pub fn check(&self) -> Result<()> {
        self.lock.check(self.lease())
    }

    /// Releases the lock, reporting failure (the drop does the same and ignores failure).
    pub fn release(mut self) -> Result<()> {
        match self.lease.take() {
            Some(lease) => self.lock.release(lease),
            None => Err(Error::new(ErrorKind::NotHeld, "the guard no longer holds the lock")
                .with_name(self.lock.name().as_str())
                .with_scope(self.lock.scope_url())),
        }
    }

    pub(crate) fn raw(&self) -> &'a dyn RawLock {
        self.lock
    }

    pub(crate) fn restore_lease(&mut self, lease: Lease) {
        debug_assert!(self.lease.is_none());
        self.lease = Some(lease);
    }

    pub(crate) fn take_lease(&mut self) -> Lease {
        self.lease.take().expect("a guard holds its lease until released")
    }

    fn lease(&self) -> &Lease {
        self.lease.as_ref().expect("a guard holds its lease until released")
    }
}

impl Drop for Guard<'_> {
    #[inline]
    fn drop(&mut self) {
        if let Some(lease) = self.lease.take() {
            // The lease came from this lock, so release can only fail in a distributed
            // scope whose hold is already lost; nothing is left to free then.
            let _ = self.lock.release(lease);
        }
    }
}

impl fmt::Debug for Guard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Guard")
            .field("name", self.name())
            .field("scope", &self.scope())
            .field("lease", &self.lease)
            .finish()
    }
}
