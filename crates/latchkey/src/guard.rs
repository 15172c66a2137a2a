//! Guards: held locks.

use std::fmt;
use std::future::Future;
use std::mem::ManuallyDrop;
use std::sync::Arc;
use std::time::Duration;

use latchkey_model::{block_on_until, Error, ErrorKind, Lease, Name, RawCede, RawLock, Result};
use latchkey_process::Permit;

use crate::handle::with_timeout;

/// A held lock: a mutex, a read or write hold of a reader-writer lock, or permits of a
/// semaphore.
///
/// Dropping the guard releases the lock; [`release`](Guard::release) does the same and
/// reports failure.
#[must_use = "if unused the lock is released at once"]
pub struct Guard<'a> {
    /// Dropped by hand in `Drop`, so that the process arm inlines and the rare arm
    /// stays out of line (the compiler's drop glue kept both out of line, and the guard
    /// went through memory; measured 12 against 7 ns per lock and unlock).
    held: ManuallyDrop<Held<'a>>,
}

/// What a guard holds; each variant releases itself when dropped.
pub(crate) enum Held<'a> {
    /// The process scope, called directly so that its fast paths inline.
    Process(Permit),
    /// Any other scope, through the scope contract (boxed to keep guards small).
    Raw(Box<RawHeld<'a>>),
}

/// A lease of a scope reached through the contract.
pub(crate) struct RawHeld<'a> {
    lock: RawRef<'a>,
    /// `None` once given back.
    lease: Option<Lease>,
}

pub(crate) enum RawRef<'a> {
    Borrowed(&'a dyn RawLock),
    Owned(Arc<dyn RawLock>),
}

impl<'a> Held<'a> {
    pub(crate) fn raw(lock: RawRef<'a>, lease: Lease) -> Self {
        Held::Raw(Box::new(RawHeld { lock, lease: Some(lease) }))
    }
}

impl RawHeld<'_> {
    fn lock(&self) -> &dyn RawLock {
        match &self.lock {
            RawRef::Borrowed(lock) => *lock,
            RawRef::Owned(lock) => &**lock,
        }
    }

    fn lease(&self) -> &Lease {
        self.lease.as_ref().expect("a lease is held until given back")
    }

    fn release(&mut self) -> Result<()> {
        match self.lease.take() {
            Some(lease) => self.lock().release(lease),
            None => Ok(()),
        }
    }

    async fn release_async(&mut self) -> Result<()> {
        match self.lease.take() {
            Some(lease) => self.lock().release_async(lease).await,
            None => Ok(()),
        }
    }

    /// The scope's ability to cede, and the lease to cede (taken out).
    fn ceder(&mut self) -> Result<(&dyn RawCede, Lease)> {
        let lock: &dyn RawLock = match &self.lock {
            RawRef::Borrowed(lock) => *lock,
            RawRef::Owned(lock) => &**lock,
        };
        let ceder = lock.as_cede().ok_or_else(|| {
            Error::new(ErrorKind::Unsupported, "this scope cannot cede a lock")
                .with_name(lock.name().as_str())
                .with_scope(lock.scope_url())
        })?;
        Ok((ceder, self.lease.take().expect("a lease is held until given back")))
    }
}

impl Drop for RawHeld<'_> {
    fn drop(&mut self) {
        // A scope over a network releases in its background task, and logs a failure.
        if let Some(lease) = self.lease.take() {
            self.lock().release_in_background(lease);
        }
    }
}

impl<'a> Guard<'a> {
    #[inline]
    pub(crate) fn new(held: Held<'a>) -> Self {
        Guard { held: ManuallyDrop::new(held) }
    }

    /// Takes what the guard holds, leaving nothing for `Drop` to do.
    #[inline]
    fn into_held(self) -> Held<'a> {
        let mut this = ManuallyDrop::new(self);
        // SAFETY: `this` is never dropped, so `held` is taken exactly once.
        unsafe { ManuallyDrop::take(&mut this.held) }
    }

    /// The fencing token of this grant: strictly greater than that of every earlier grant
    /// of the name in the scope. Pass it to the guarded resource, which rejects tokens
    /// lower than the highest it has seen.
    pub fn fencing_token(&self) -> u64 {
        match &*self.held {
            Held::Process(permit) => permit.token(),
            Held::Raw(raw) => raw.lease().token(),
        }
    }

    /// How many permits the guard holds.
    pub fn permits(&self) -> u32 {
        match &*self.held {
            Held::Process(permit) => permit.permits(),
            Held::Raw(raw) => raw.lease().permits(),
        }
    }

    /// The lock's name.
    pub fn name(&self) -> &Name {
        match &*self.held {
            Held::Process(permit) => permit.name(),
            Held::Raw(raw) => raw.lock().name(),
        }
    }

    /// The URL of the lock's scope.
    pub fn scope(&self) -> &str {
        match &*self.held {
            Held::Process(_) => latchkey_process::URL,
            Held::Raw(raw) => raw.lock().scope_url(),
        }
    }

    /// `Ok` while the hold is intact; a `HandleLost` error once the scope took it away (a
    /// host namespace file deleted or replaced; in a distributed scope, a lease expired, a
    /// connection dropped).
    pub fn check(&self) -> Result<()> {
        match &*self.held {
            Held::Process(_) => Ok(()),
            Held::Raw(raw) => raw.lock().check(raw.lease()),
        }
    }

    /// Whether the hold is known to be lost, from what the scope has already seen: a
    /// host namespace file deleted or replaced (noticed by the scope's watcher thread), a
    /// distributed scope's session lapsed. Cheap: for a supervisor that asks often;
    /// [`check`](Guard::check) looks now.
    pub fn is_lost(&self) -> bool {
        match &*self.held {
            Held::Process(_) => false,
            Held::Raw(raw) => raw.lock().is_lost(raw.lease()),
        }
    }

    /// A future that completes once the hold is lost: a host namespace file deleted or
    /// replaced; in a distributed scope, the session's keep-alive failed, its lease
    /// expired, or the request's key was deleted. It never completes while the hold is
    /// intact (nor, in the process scope, ever). It does not borrow the guard.
    ///
    /// ```no_run
    /// # async fn job(scope: latchkey::Scope) -> latchkey::Result<()> {
    /// # async fn migrate(_token: u64) {}
    /// let guard = scope.lock("db-migrations").await?;
    /// tokio::select! {
    ///     () = migrate(guard.fencing_token()) => guard.release()?,
    ///     () = guard.lost() => eprintln!("the lock was lost: stopping"),
    /// }
    /// # Ok(()) }
    /// ```
    pub fn lost(&self) -> impl Future<Output = ()> + Send + 'static {
        let lost = match &*self.held {
            Held::Process(_) => None,
            Held::Raw(raw) => Some(raw.lock().lost(raw.lease())),
        };
        async move {
            match lost {
                Some(lost) => lost.await,
                None => std::future::pending().await,
            }
        }
    }

    /// The async form of [`check`](Guard::check), for scopes over a network.
    pub async fn check_async(&self) -> Result<()> {
        match &*self.held {
            Held::Process(_) => Ok(()),
            Held::Raw(raw) => raw.lock().check_async(raw.lease()).await,
        }
    }

    /// Releases the lock, reporting failure. A drop releases too: a scope over a network
    /// does it in the background and logs a failure (`tracing`).
    #[inline]
    pub fn release(self) -> Result<()> {
        match self.into_held() {
            Held::Process(permit) => {
                permit.release();
                Ok(())
            }
            Held::Raw(mut raw) => raw.release(),
        }
    }

    /// The async form of [`release`](Guard::release), for scopes over a network.
    pub async fn release_async(self) -> Result<()> {
        match self.into_held() {
            Held::Process(permit) => {
                permit.release();
                Ok(())
            }
            Held::Raw(mut raw) => raw.release_async().await,
        }
    }

    /// If anybody waits, hands the lock to the head of the queue and waits again at the
    /// back; if nobody waits, keeps it: the step of an interval lock
    /// ([`IntervalGuard::cede`](crate::IntervalGuard::cede)), for guards of a [`Lock`](crate::Lock).
    /// A new grant has a new fencing token; on an error the lock is given up.
    pub async fn cede(self) -> Result<Guard<'a>> {
        Ok(Guard::new(match self.into_held() {
            Held::Process(permit) => Held::Process(permit.cede().await),
            Held::Raw(mut raw) => {
                let (ceder, lease) = raw.ceder()?;
                let lease = ceder.cede(lease).await?;
                raw.lease = Some(lease);
                Held::Raw(raw)
            }
        }))
    }

    /// [`cede`](Guard::cede), waiting at most `timeout` to be granted again: then it fails
    /// with [`Timeout`](crate::ErrorKind::Timeout), and the lock is given up, as on every
    /// error of a cede (its request withdrawn). A scope over a network takes at least its
    /// first round trip's grace (250 ms), so that a short timeout with nobody waiting
    /// keeps the grant, as a short acquire of a free lock gets it.
    pub async fn cede_timeout(self, timeout: Duration) -> Result<Guard<'a>> {
        let grace = match &*self.held {
            Held::Process(_) => Duration::ZERO,
            Held::Raw(raw) => raw.lock().as_cede().map_or(Duration::ZERO, RawCede::first_trip_grace),
        };
        let (name, scope) = (self.name().clone(), self.scope().to_owned());
        with_timeout(self.cede(), Some(timeout.max(grace)), &name, &scope).await
    }

    /// The blocking form of [`cede_timeout`](Guard::cede_timeout).
    pub fn cede_blocking_timeout(self, timeout: Duration) -> Result<Guard<'a>> {
        block_on_until(self.cede_timeout(timeout), None).expect("a wait without a deadline completes")
    }

    /// The blocking form of [`cede`](Guard::cede).
    pub fn cede_blocking(self) -> Result<Guard<'a>> {
        Ok(Guard::new(match self.into_held() {
            Held::Process(permit) => Held::Process(permit.cede_blocking()),
            Held::Raw(mut raw) => {
                let (ceder, lease) = raw.ceder()?;
                let lease = ceder.cede_blocking(lease)?;
                raw.lease = Some(lease);
                Held::Raw(raw)
            }
        }))
    }
}

impl Drop for Guard<'_> {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: `held` is not used after this.
        match unsafe { ManuallyDrop::take(&mut self.held) } {
            Held::Process(permit) => drop(permit),
            Held::Raw(raw) => drop_raw(raw),
        }
    }
}

#[cold]
#[inline(never)]
fn drop_raw(raw: Box<RawHeld<'_>>) {
    drop(raw);
}

impl fmt::Debug for Guard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Guard")
            .field("name", self.name())
            .field("scope", &self.scope())
            .field("permits", &self.permits())
            .field("fencing_token", &self.fencing_token())
            .finish()
    }
}
