//! The process scope behind the scope contract, for code that is generic over scopes.
//! (The `latchkey` crate calls [`ProcessScope`] directly, so its fast paths inline.)
//!
//! A `Permit` cannot be given back twice, but a `Lease` is plain data: the adapter
//! records the leases it hands out on the name's entry and refuses any other.

use std::sync::Arc;
use std::time::Instant;

use latchkey_model::{
    with_deadline, BoxFuture, Error, ErrorKind, Lease, Name, RawCede, RawLock, RawScope, Result, State,
};

use crate::registry::Entry;
use crate::{Handle, Permit, ProcessScope, URL};

impl RawScope for ProcessScope {
    fn url(&self) -> &str {
        URL
    }

    fn open(&self, name: &str, capacity: u32) -> Result<Arc<dyn RawLock>> {
        Ok(Arc::new(ProcessScope::open(self, name, capacity)?))
    }

    fn inspect(&self, name: &str) -> Result<State> {
        ProcessScope::inspect(self, name)
    }

    fn list(&self) -> Result<Vec<State>> {
        Ok(ProcessScope::list(self))
    }
}

/// Hands a permit over as a lease, recording it.
fn into_lease(entry: &Entry, permit: Permit) -> Lease {
    let lease = Lease::new(permit.permits(), permit.token(), 0);
    entry.leases.lock().insert(lease.token(), lease.permits());
    std::mem::forget(permit);
    lease
}

/// Takes a lease back: it must be one this name granted and that is still held.
fn take_back(handle: &Handle, lease: &Lease) -> Result<()> {
    let mut leases = handle.entry().leases.lock();
    match leases.get(&lease.token()) {
        Some(&permits) if permits == lease.permits() => {
            leases.remove(&lease.token());
            Ok(())
        }
        _ => Err(Error::new(
            ErrorKind::NotHeld,
            format!("the lease with token {} and {} permits is not held", lease.token(), lease.permits()),
        )
        .with_name(handle.name().as_str())
        .with_scope(URL)),
    }
}

impl RawLock for Handle {
    fn name(&self) -> &Name {
        Handle::name(self)
    }

    fn scope_url(&self) -> &str {
        URL
    }

    fn capacity(&self) -> u32 {
        Handle::capacity(self)
    }

    fn try_acquire(&self, permits: u32) -> Result<Option<Lease>> {
        Ok(Handle::try_acquire(self, permits)?.map(|permit| into_lease(self.entry(), permit)))
    }

    fn acquire(&self, permits: u32, deadline: Option<Instant>) -> BoxFuture<'_, Result<Lease>> {
        let timeout = move || {
            Error::new(ErrorKind::Timeout, "not granted before the deadline")
                .with_name(self.name().as_str())
                .with_scope(URL)
        };
        Box::pin(async move {
            let permit = with_deadline(Handle::acquire(self, permits), deadline, timeout).await?;
            Ok(into_lease(self.entry(), permit))
        })
    }

    fn acquire_blocking(&self, permits: u32, deadline: Option<Instant>) -> Result<Lease> {
        Ok(into_lease(self.entry(), Handle::acquire_blocking(self, permits, deadline)?))
    }

    fn release(&self, lease: Lease) -> Result<()> {
        take_back(self, &lease)?;
        self.entry().semaphore.release(lease.permits()).expect("a recorded lease is held");
        Ok(())
    }

    fn inspect(&self) -> Result<State> {
        Ok(self.state())
    }

    fn as_cede(&self) -> Option<&dyn RawCede> {
        Some(self)
    }
}

impl RawCede for Handle {
    fn cede(&self, lease: Lease) -> BoxFuture<'_, Result<Lease>> {
        // Made a permit at once, so that dropping the future unpolled releases it.
        let permit = take_back(self, &lease).map(|()| Permit::granted(self.entry(), lease.permits(), lease.token()));
        Box::pin(async move { Ok(into_lease(self.entry(), permit?.cede().await)) })
    }

    fn cede_blocking(&self, lease: Lease) -> Result<Lease> {
        take_back(self, &lease)?;
        let permit = Permit::granted(self.entry(), lease.permits(), lease.token());
        Ok(into_lease(self.entry(), permit.cede_blocking()))
    }
}
