//! The one resolved name under every primitive: try, async, blocking and timed waits,
//! written once for every scope.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use latchkey_model::{with_deadline, Error, ErrorKind, Name, RawLock, Result, State};
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

    pub(crate) async fn inspect_async(&self) -> Result<State> {
        match self {
            Handle::Process(handle) => Ok(handle.state()),
            Handle::Raw(lock) => lock.inspect_async().await,
        }
    }

    /// Whether the scope can hand a grant over and queue again (what an interval lock needs).
    pub(crate) fn can_cede(&self) -> bool {
        match self {
            Handle::Process(_) => true,
            Handle::Raw(lock) => lock.as_cede().is_some(),
        }
    }

    #[inline]
    pub(crate) fn try_acquire(&self, permits: u32) -> Result<Option<Guard<'_>>> {
        Ok(match self {
            Handle::Process(handle) => handle.try_acquire(permits)?.map(|p| Guard::new(Held::Process(p))),
            Handle::Raw(lock) => lock.try_acquire(permits)?.map(|lease| raw_guard(&**lock, lease)),
        })
    }

    pub(crate) async fn try_acquire_async(&self, permits: u32) -> Result<Option<Guard<'_>>> {
        Ok(match self {
            Handle::Process(handle) => handle.try_acquire(permits)?.map(|p| Guard::new(Held::Process(p))),
            Handle::Raw(lock) => lock.try_acquire_async(permits).await?.map(|lease| raw_guard(&**lock, lease)),
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
            // The scope takes the deadline, and tries at once before it queues.
            Handle::Raw(lock) => Ok(raw_guard(&**lock, lock.acquire(permits, deadline_after(timeout)).await?)),
        }
    }

    #[inline]
    pub(crate) fn acquire_blocking(&self, permits: u32, timeout: Option<Duration>) -> Result<Guard<'_>> {
        let deadline = deadline_after(timeout);
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

impl Handle {
    /// [`try_acquire`](Handle::try_acquire), with a guard that borrows nothing.
    pub(crate) fn try_acquire_owned(&self, permits: u32) -> Result<Option<Guard<'static>>> {
        Ok(match self {
            Handle::Process(handle) => handle.try_acquire(permits)?.map(|p| Guard::new(Held::Process(p))),
            Handle::Raw(lock) => lock.try_acquire(permits)?.map(|lease| owned_guard(lock, lease)),
        })
    }

    /// [`acquire`](Handle::acquire), with a guard that borrows nothing.
    pub(crate) async fn acquire_owned(&self, permits: u32, timeout: Option<Duration>) -> Result<Guard<'static>> {
        match self {
            Handle::Process(handle) => {
                let permit = with_timeout(handle.acquire(permits), timeout, self.name(), self.scope_url()).await?;
                Ok(Guard::new(Held::Process(permit)))
            }
            Handle::Raw(lock) => Ok(owned_guard(lock, lock.acquire(permits, deadline_after(timeout)).await?)),
        }
    }

    /// [`acquire_blocking`](Handle::acquire_blocking), with a guard that borrows nothing.
    pub(crate) fn acquire_blocking_owned(&self, permits: u32, timeout: Option<Duration>) -> Result<Guard<'static>> {
        let deadline = deadline_after(timeout);
        Ok(match self {
            Handle::Process(handle) => Guard::new(Held::Process(handle.acquire_blocking(permits, deadline)?)),
            Handle::Raw(lock) => owned_guard(lock, lock.acquire_blocking(permits, deadline)?),
        })
    }
}

fn owned_guard(lock: &Arc<dyn RawLock>, lease: latchkey_model::Lease) -> Guard<'static> {
    Guard::new(Held::raw(RawRef::Owned(lock.clone()), lease))
}

fn raw_guard(lock: &dyn RawLock, lease: latchkey_model::Lease) -> Guard<'_> {
    Guard::new(Held::raw(RawRef::Borrowed(lock), lease))
}

/// The deadline `timeout` from now; a timeout too large to add to now is none.
pub(crate) fn deadline_after(timeout: Option<Duration>) -> Option<Instant> {
    timeout.and_then(|t| Instant::now().checked_add(t))
}

/// Awaits `wait`, for at most `timeout` if one is given (then a `Timeout` error), on any
/// executor. Dropping `wait` on timeout withdraws the request.
pub(crate) async fn with_timeout<T>(
    wait: impl Future<Output = Result<T>>,
    timeout: Option<Duration>,
    name: &Name,
    scope: &str,
) -> Result<T> {
    let timed_out = || {
        let within = timeout.unwrap_or_default();
        Error::new(ErrorKind::Timeout, format!("not granted within {within:?}"))
            .with_name(name.as_str())
            .with_scope(scope)
    };
    with_deadline(wait, deadline_after(timeout), timed_out).await
}
