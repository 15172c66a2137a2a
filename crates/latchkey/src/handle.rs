//! The one resolved name under every primitive: try, async, blocking and timed waits,
//! written once for every scope.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use latchkey_model::{Error, ErrorKind, Name, RawLock, Result, State};
use latchkey_process::Handle as ProcessHandle;

use crate::guard::{Held, RawRef};
use crate::Guard;

/// A name resolved in its scope.
pub(crate) enum Handle {
    /// The process scope, called directly so that its fast paths inline.
    Process(ProcessHandle),
    /// Any other scope, through the scope contract.
    Raw(Arc<dyn RawLock>),
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lock")
            .field("name", &self.name().as_str())
            .field("scope", &self.scope_url())
            .field("capacity", &self.capacity())
            .finish()
    }
}

impl Handle {
    pub(crate) fn name(&self) -> &Name {
        match self {
            Handle::Process(handle) => handle.name(),
            Handle::Raw(lock) => lock.name(),
        }
    }

    pub(crate) fn capacity(&self) -> u32 {
        match self {
            Handle::Process(handle) => handle.capacity(),
            Handle::Raw(lock) => lock.capacity(),
        }
    }

    pub(crate) fn inspect(&self) -> Result<State> {
        match self {
            Handle::Process(handle) => Ok(handle.state()),
            Handle::Raw(lock) => lock.inspect(),
        }
    }

    #[inline]
    pub(crate) fn try_acquire(&self, permits: u32) -> Result<Option<Guard<'_>>> {
        Ok(match self {
            Handle::Process(handle) => handle.try_acquire(permits)?.map(|p| Guard::new(Held::Process(p))),
            Handle::Raw(lock) => lock.try_acquire(permits)?.map(|lease| raw_guard(&**lock, lease)),
        })
    }

    pub(crate) async fn acquire(&self, permits: u32, timeout: Option<Duration>) -> Result<Guard<'_>> {
        match self {
            // The process handle tries the fast path itself before it queues.
            Handle::Process(handle) => {
                let permit = match timeout {
                    None => handle.acquire(permits).await?,
                    Some(_) => with_timeout(handle.acquire(permits), timeout, self.name(), self.scope_url()).await?,
                };
                Ok(Guard::new(Held::Process(permit)))
            }
            Handle::Raw(lock) => {
                if let Some(lease) = lock.try_acquire(permits)? {
                    return Ok(raw_guard(&**lock, lease));
                }
                let lease = with_timeout(lock.acquire(permits), timeout, self.name(), self.scope_url()).await?;
                Ok(raw_guard(&**lock, lease))
            }
        }
    }

    #[inline]
    pub(crate) fn acquire_blocking(&self, permits: u32, timeout: Option<Duration>) -> Result<Guard<'_>> {
        // A timeout too large to add to now is no timeout.
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        Ok(match self {
            Handle::Process(handle) => Guard::new(Held::Process(handle.acquire_blocking(permits, deadline)?)),
            Handle::Raw(lock) => raw_guard(&**lock, lock.acquire_blocking(permits, deadline)?),
        })
    }

    fn scope_url(&self) -> &str {
        match self {
            Handle::Process(_) => latchkey_process::URL,
            Handle::Raw(lock) => lock.scope_url(),
        }
    }
}

fn raw_guard(lock: &dyn RawLock, lease: latchkey_model::Lease) -> Guard<'_> {
    Guard::new(Held::raw(RawRef::Borrowed(lock), lease))
}

/// Awaits `wait`, for at most `timeout` if one is given (then a `Timeout` error).
/// Dropping `wait` on timeout withdraws the request.
pub(crate) async fn with_timeout<T>(
    wait: impl Future<Output = Result<T>>,
    timeout: Option<Duration>,
    name: &Name,
    scope: &str,
) -> Result<T> {
    let Some(timeout) = timeout else {
        return wait.await;
    };
    match tokio::time::timeout(timeout, wait).await {
        Ok(result) => result,
        Err(_) => Err(Error::new(ErrorKind::Timeout, format!("not granted within {timeout:?}"))
            .with_name(name.as_str())
            .with_scope(scope)),
    }
}
