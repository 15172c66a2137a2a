//! The process scope behind the scope contract, for code that is generic over scopes.
//! (The `latchkey` crate calls [`ProcessScope`] directly, so its fast paths inline.)

use std::sync::Arc;
use std::time::Instant;

use latchkey_model::{BoxFuture, Error, ErrorKind, Lease, Name, RawLock, RawScope, Result, State};

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

/// A permit handed over as a lease: its release becomes the lease holder's job.
fn into_lease(permit: Permit) -> Lease {
    let lease = Lease::new(permit.permits(), permit.token(), 0);
    std::mem::forget(permit);
    lease
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
        Ok(Handle::try_acquire(self, permits)?.map(into_lease))
    }

    fn acquire(&self, permits: u32) -> BoxFuture<'_, Result<Lease>> {
        Box::pin(async move { Handle::acquire(self, permits).await.map(into_lease) })
    }

    fn acquire_blocking(&self, permits: u32, deadline: Option<Instant>) -> Result<Lease> {
        Handle::acquire_blocking(self, permits, deadline).map(into_lease)
    }

    fn release(&self, lease: Lease) -> Result<()> {
        self.entry().semaphore.release(lease.permits()).map_err(|_| {
            Error::new(ErrorKind::NotHeld, format!("released {} permits that were not held", lease.permits()))
                .with_name(self.name().as_str())
                .with_scope(URL)
        })
    }

    fn cede(&self, lease: Lease) -> BoxFuture<'_, Result<Lease>> {
        let permit = Permit::granted(self.entry(), lease.permits(), lease.token());
        Box::pin(async move { Ok(into_lease(permit.cede().await)) })
    }

    fn cede_blocking(&self, lease: Lease) -> Result<Lease> {
        let permit = Permit::granted(self.entry(), lease.permits(), lease.token());
        Ok(into_lease(permit.cede_blocking()))
    }

    fn inspect(&self) -> Result<State> {
        Ok(self.state())
    }
}
