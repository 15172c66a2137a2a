//! One name of a host namespace, behind the `RawLock` contract: acquiring (try, blocking,
//! async), releasing, ceding, inspecting.

use std::ptr::NonNull;
use std::sync::atomic::{AtomicPtr, AtomicU64};
use std::sync::Arc;
use std::time::Instant;

use latchkey_model::{
    describe_capacity, with_deadline, BoxFuture, Error, ErrorKind, Lease, Name, RawCede, RawLock, Result, State,
};

use crate::layout::Record;
use crate::protocol::{hold_is_ours, lost, Fast, Grant, Locked, Rec};
use crate::scope::{state_of, Host};
use crate::table::Found;
use crate::wait::{wait_blocking, withdraw_request, Lost, Queued};

/// One name of a host namespace.
pub struct HostLock {
    host: Arc<Host>,
    name: Name,
    capacity: u32,
    /// Opened for one use (locking by name): the process does not mark the name open, so
    /// the capacity is checked when the lock is taken, and the record is found again if
    /// the name was reclaimed in between.
    once: bool,
    /// The record: `index << 32 | generation`...
    target: AtomicU64,
    /// ...and where it is in the mapping (records never move).
    record: AtomicPtr<Record>,
}

impl HostLock {
    pub(crate) fn new(host: Arc<Host>, name: Name, capacity: u32, found: Found, once: bool) -> Result<HostLock> {
        let record = host.ns.shm.record(found.index)?;
        Ok(HostLock {
            target: AtomicU64::new(u64::from(found.index) << 32 | u64::from(found.generation)),
            record: AtomicPtr::new(record as *const Record as *mut Record),
            host,
            name,
            capacity,
            once,
        })
    }

    fn ns(&self) -> &Arc<crate::namespace::Namespace> {
        &self.host.ns
    }

    /// The record, as last found.
    #[inline]
    fn rec(&self) -> Rec<'_> {
        let target = self.target.load(std::sync::atomic::Ordering::Acquire);
        let record = NonNull::new(self.record.load(std::sync::atomic::Ordering::Acquire)).expect("set when made");
        // SAFETY: the pointer was taken from the mapping, which `host` keeps alive and
        // which never moves (on a bus error it is replaced in place); records are made of
        // atomics.
        let r = unsafe { record.as_ref() };
        Rec::at(&self.host.ns.shm, (target >> 32) as u32, r, target as u32)
    }

    /// The record under its lock as the uncontended path left it: given this handle's
    /// capacity, for a one-use handle, as [`locked`](Self::locked) does.
    fn checked<'a>(&self, mut locked: Locked<'a>) -> Result<Locked<'a>> {
        if self.once {
            locked.ensure_capacity(self.capacity)?;
        }
        Ok(locked)
    }

    /// The record under its lock: for a one-use handle, found again if it was reclaimed,
    /// and given this handle's capacity if nobody uses it with another.
    #[inline]
    fn locked(&self) -> Result<Locked<'_>> {
        // (Found again at most a few times: a name reclaimed under a one-use handle again
        // and again is a namespace that someone else corrupts.)
        for _ in 0..8 {
            match self.rec().lock() {
                Ok(mut locked) => {
                    if self.once {
                        locked.ensure_capacity(self.capacity)?;
                    }
                    return Ok(locked);
                }
                Err(e) if self.once && e.kind() == ErrorKind::HandleLost && !self.ns().shm.is_lost() => {
                    let found = self.ns().find_or_create(self.name.as_str(), self.capacity)?;
                    let record = self.ns().shm.record(found.index)?;
                    self.record.store(record as *const Record as *mut Record, std::sync::atomic::Ordering::Release);
                    let target = u64::from(found.index) << 32 | u64::from(found.generation);
                    self.target.store(target, std::sync::atomic::Ordering::Release);
                }
                Err(e) => return Err(e),
            }
        }
        Err(crate::shm::corrupted("a name's record changes under every lookup"))
    }

    /// Adds the name and the scope to an error of the layers below.
    fn scoped(&self, error: Error) -> Error {
        error.with_name(self.name.as_str()).with_scope(self.ns().url())
    }

    #[inline]
    fn check_request(&self, permits: u32) -> Result<()> {
        self.check_process()?;
        if permits == 0 || permits > self.capacity {
            return Err(self.ns().error(
                ErrorKind::CapacityMismatch,
                format!("asked for {permits} permits of {}", describe_capacity(self.capacity)),
                Some(self.name.as_str()),
            ));
        }
        Ok(())
    }

    /// Refuses a copy of the handle in a forked child: it would act as the parent.
    #[inline]
    fn check_process(&self) -> Result<()> {
        if self.ns().is_ours() {
            Ok(())
        } else {
            Err(self.ns().forked_error(Some(self.name.as_str())))
        }
    }

    fn lease(grant: Grant, permits: u32) -> Lease {
        Lease::new(permits, grant.token, u64::from(grant.entry))
    }

    /// The hold behind `lease`, if this process holds it.
    #[inline]
    fn held(&self, lease: &Lease) -> Result<u32> {
        self.check_process()?;
        let shm = &self.ns().shm;
        let at = u32::try_from(lease.ticket()).unwrap_or(0);
        let holds = shm.entry(at).is_ok_and(|e| hold_is_ours(self.rec(), e, lease.permits(), lease.token()));
        if holds {
            return Ok(at);
        }
        if shm.is_lost() {
            // (A namespace cut short reads as zeroes: the hold is gone with it.)
            return Err(self.scoped(lost()));
        }
        let why = format!("the lease with token {} is not held by this process", lease.token());
        Err(self.ns().error(ErrorKind::NotHeld, why, Some(self.name.as_str())))
    }

    fn timeout(&self) -> Error {
        let why = "the deadline passed before the lock was granted";
        self.ns().error(ErrorKind::Timeout, why, Some(self.name.as_str()))
    }

    /// Takes `permits` now if nobody waits and they are free; otherwise queues a request
    /// for them (`async_`: to be waited for asynchronously). Returns the grant, or the
    /// entry queued and its word then.
    fn grant_or_enqueue(&self, permits: u32, async_: bool) -> Result<std::result::Result<Grant, (u32, u32)>> {
        let ns = self.ns();
        if !ns.may_grant() {
            return Err(lost());
        }
        let at = ns.take_entry()?;
        let mut fast = self.rec().try_grant_fast(at, permits, self.capacity);
        // A blocking request spins for the permits to come free before it queues, while
        // nobody is queued (an async one queues at once: it must not hold its executor).
        let nobody_queued = || self.rec().r.queue_head.load(std::sync::atomic::Ordering::Relaxed) == 0;
        if !async_ && !matches!(fast, Fast::Done(_)) && nobody_queued() {
            drop(fast);
            fast = match self.rec().spin_until_free(permits, PRE_QUEUE_SPIN) {
                true => self.rec().try_grant_fast(at, permits, self.capacity),
                false => Fast::Busy,
            };
        }
        let locked = match fast {
            Fast::Done(grant) => return Ok(Ok(grant)),
            Fast::Locked(locked) => self.checked(locked),
            Fast::Busy => self.locked(),
        };
        let queued = locked.and_then(|mut locked| {
            if let Some(grant) = locked.try_grant(at, permits)? {
                return Ok(Ok(grant));
            }
            Ok(Err((at, locked.enqueue(at, permits, async_)?)))
        });
        if queued.is_err() {
            ns.put_entry(at);
        }
        queued
    }

    /// Waits asynchronously for the request queued in entry `at`.
    async fn wait(&self, at: u32, permits: u32) -> Result<Lease> {
        let rec = self.rec();
        let queued = match Queued::new(self.ns(), &self.host.waits, rec, at) {
            Ok(queued) => queued,
            Err(e) => {
                withdraw_request(self.ns(), rec, at);
                return Err(self.scoped(e));
            }
        };
        let grant = queued.await.map_err(|e| self.scoped(e))?;
        Ok(Self::lease(grant, permits))
    }
}

impl Drop for HostLock {
    fn drop(&mut self) {
        if !self.once && self.ns().is_ours() {
            self.ns().close_name(self.rec().index);
        }
    }
}

/// A lease to release if the future that holds it is dropped before it runs.
struct ReleaseOnDrop<'a> {
    lock: &'a HostLock,
    lease: Option<Lease>,
}

impl ReleaseOnDrop<'_> {
    fn disarm(mut self) -> Lease {
        self.lease.take().expect("armed")
    }
}

impl Drop for ReleaseOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(lease) = self.lease.take() {
            let _ = self.lock.release(lease);
        }
    }
}

impl RawLock for HostLock {
    fn name(&self) -> &Name {
        &self.name
    }

    fn scope_url(&self) -> &str {
        self.ns().url()
    }

    fn capacity(&self) -> u32 {
        self.capacity
    }

    fn try_acquire(&self, permits: u32) -> Result<Option<Lease>> {
        self.check_request(permits)?;
        let ns = self.ns();
        if !ns.may_grant() {
            return Err(self.scoped(lost()));
        }
        let at = ns.take_entry().map_err(|e| self.scoped(e))?;
        let locked = match self.rec().try_grant_fast(at, permits, self.capacity) {
            Fast::Done(grant) => return Ok(Some(Self::lease(grant, permits))),
            Fast::Locked(locked) => self.checked(locked),
            Fast::Busy => self.locked(),
        };
        let granted = locked.and_then(|mut locked| {
            if let Some(grant) = locked.try_grant(at, permits)? {
                return Ok(Some(grant));
            }
            // Held by a process that died, with nobody waiting to notice: free it, try again.
            if locked.has_dead()? && locked.repair()? {
                return locked.try_grant(at, permits);
            }
            Ok(None)
        });
        match granted {
            Ok(Some(grant)) => Ok(Some(Self::lease(grant, permits))),
            other => {
                ns.put_entry(at);
                other.map(|_| None).map_err(|e| self.scoped(e))
            }
        }
    }

    fn acquire(&self, permits: u32, deadline: Option<Instant>) -> BoxFuture<'_, Result<Lease>> {
        Box::pin(async move {
            self.check_request(permits)?;
            match self.grant_or_enqueue(permits, true).map_err(|e| self.scoped(e))? {
                Ok(grant) => Ok(Self::lease(grant, permits)),
                Err((at, _)) => with_deadline(self.wait(at, permits), deadline, || self.timeout()).await,
            }
        })
    }

    fn acquire_blocking(&self, permits: u32, deadline: Option<Instant>) -> Result<Lease> {
        self.check_request(permits)?;
        let (at, queued) = match self.grant_or_enqueue(permits, false).map_err(|e| self.scoped(e))? {
            Ok(grant) => return Ok(Self::lease(grant, permits)),
            Err(queued) => queued,
        };
        let rec = self.rec();
        match wait_blocking(self.ns(), &self.host.waits, rec, at, queued, deadline).map_err(|e| self.scoped(e))? {
            Some(grant) => Ok(Self::lease(grant, permits)),
            None => Err(self.timeout()),
        }
    }

    fn release(&self, lease: Lease) -> Result<()> {
        let ns = self.ns();
        let at = u32::try_from(lease.ticket()).unwrap_or(0);
        let fast = if ns.is_ours() { self.rec().release_fast(at, lease.permits(), lease.token()) } else { Fast::Busy };
        let locked = match fast {
            Fast::Done(()) => {
                ns.put_entry(at);
                return Ok(());
            }
            Fast::Locked(locked) => Ok(locked),
            Fast::Busy => self.held(&lease).and_then(|_| self.rec().lock_any()),
        };
        locked.and_then(|mut locked| locked.release(at)).map_err(|e| self.scoped(e))?;
        ns.put_entry(at);
        if ns.shm.is_lost() {
            return Err(self.scoped(lost()));
        }
        Ok(())
    }

    fn inspect(&self) -> Result<State> {
        let rec = self.rec();
        let found = Found { index: rec.index, generation: rec.generation };
        state_of(self.ns(), found, self.name.clone()).map_err(|e| self.scoped(e))
    }

    fn check(&self, lease: &Lease) -> Result<()> {
        let lost_hold = |why: &str| self.ns().error(ErrorKind::HandleLost, why.to_string(), Some(self.name.as_str()));
        if self.ns().shm.is_lost() || !self.ns().verify_identity() {
            return Err(lost_hold(
                "the namespace file was deleted, replaced or cut short: the hold no longer excludes anyone",
            ));
        }
        self.held(lease).map(|_| ()).map_err(|_| lost_hold("the hold is no longer recorded"))
    }

    fn is_lost(&self, lease: &Lease) -> bool {
        // Where a watcher thread follows the file (inotify), the lost mark is up to date
        // but for the thread's scheduling delay; elsewhere, look at the file now.
        if !self.ns().is_watched() {
            return self.check(lease).is_err();
        }
        self.ns().shm.is_lost() || self.held(lease).is_err()
    }

    fn lost(&self, _lease: &Lease) -> BoxFuture<'static, ()> {
        Box::pin(Lost::new(self.host.clone()))
    }

    fn as_cede(&self) -> Option<&dyn RawCede> {
        Some(self)
    }
}

impl RawCede for HostLock {
    fn cede(&self, lease: Lease) -> BoxFuture<'_, Result<Lease>> {
        // Queued when first polled; a future dropped before that gives the lease up.
        let unpolled = ReleaseOnDrop { lock: self, lease: Some(lease) };
        Box::pin(async move {
            let lease = unpolled.disarm();
            let at = self.held(&lease)?;
            let queued = match self.rec().lock().and_then(|mut locked| locked.cede(at, true)) {
                Ok(queued) => queued,
                Err(e) => {
                    // Still held, by a lease the caller no longer has: given back.
                    let _ = self.release(lease);
                    return Err(self.scoped(e));
                }
            };
            if queued.is_none() {
                return Ok(lease);
            }
            self.wait(at, lease.permits()).await
        })
    }

    fn cede_blocking(&self, lease: Lease) -> Result<Lease> {
        let at = self.held(&lease)?;
        let rec = self.rec();
        let queued = match rec.lock().and_then(|mut locked| locked.cede(at, false)) {
            Ok(queued) => queued,
            Err(e) => {
                // Still held, by a lease the caller no longer has: given back.
                let _ = self.release(lease);
                return Err(self.scoped(e));
            }
        };
        let Some(queued) = queued else { return Ok(lease) };
        match wait_blocking(self.ns(), &self.host.waits, rec, at, queued, None).map_err(|e| self.scoped(e))? {
            Some(grant) => Ok(Self::lease(grant, lease.permits())),
            None => Err(self.timeout()),
        }
    }
}

/// How long a blocking request spins for the permits to come free before it queues (see
/// `Rec::spin_until_free`).
const PRE_QUEUE_SPIN: std::time::Duration = std::time::Duration::from_micros(10);
