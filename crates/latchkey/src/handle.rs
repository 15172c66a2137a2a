//! The one resolved name under every primitive: try, async, blocking and timed waits,
//! written once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use latchkey_model::{Error, ErrorKind, Lease, RawLock, Result};

use crate::Guard;

/// A name resolved in its scope.
#[derive(Clone)]
pub(crate) struct Handle(pub(crate) Arc<dyn RawLock>);

impl Handle {
    #[inline]
    pub(crate) fn try_acquire(&self, permits: u32) -> Result<Option<Guard<'_>>> {
        Ok(self.0.try_acquire(permits)?.map(|lease| Guard::new(&*self.0, lease)))
    }

    pub(crate) async fn acquire(&self, permits: u32, timeout: Option<Duration>) -> Result<Guard<'_>> {
        let lease = match self.0.try_acquire(permits)? {
            Some(lease) => lease,
            None => self.wait(permits, timeout).await?,
        };
        Ok(Guard::new(&*self.0, lease))
    }

    #[inline]
    pub(crate) fn acquire_blocking(&self, permits: u32, timeout: Option<Duration>) -> Result<Guard<'_>> {
        let deadline = timeout.map(|t| Instant::now() + t);
        Ok(Guard::new(&*self.0, self.0.acquire_blocking(permits, deadline)?))
    }

    async fn wait(&self, permits: u32, timeout: Option<Duration>) -> Result<Lease> {
        let Some(timeout) = timeout else {
            return self.0.acquire(permits).await;
        };
        match tokio::time::timeout(timeout, self.0.acquire(permits)).await {
            Ok(result) => result,
            Err(_) => Err(timeout_error(&*self.0, timeout)),
        }
    }
}

pub(crate) fn timeout_error(lock: &dyn RawLock, timeout: Duration) -> Error {
    Error::new(ErrorKind::Timeout, format!("not granted within {timeout:?}"))
        .with_name(lock.name().as_str())
        .with_scope(lock.scope_url())
}
