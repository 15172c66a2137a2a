//! The process scope: the registry of names behind the scope contract.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use latchkey_model::{
    block_on_until, BoxFuture, Error, ErrorKind, Holder, Lease, Name, RawLock, RawScope, Result, State,
};

use crate::registry::{describe, Entry, Registry};

/// The URL of the process scope.
pub const URL: &str = "process:";

/// The threads and async tasks of one process.
///
/// [`ProcessScope::global`] is the scope that `process:` opens; [`ProcessScope::new`]
/// makes a private one whose names are seen by nobody else.
///
/// `inspect` reports the holders of a name as one [`Holder`] with this process's pid and
/// the permits in use: telling holders apart would cost the uncontended path.
#[derive(Default)]
pub struct ProcessScope {
    registry: Registry,
}

impl ProcessScope {
    /// A private scope.
    pub fn new() -> Self {
        ProcessScope::default()
    }

    /// The scope of the whole process.
    pub fn global() -> &'static ProcessScope {
        static GLOBAL: OnceLock<ProcessScope> = OnceLock::new();
        GLOBAL.get_or_init(ProcessScope::new)
    }

    /// How many names the registry holds, including idle ones not yet reclaimed.
    pub fn registered_names(&self) -> usize {
        self.registry.len()
    }

    /// Reclaims every idle name now, instead of on the next growth of the registry.
    pub fn compact(&self) {
        self.registry.compact();
    }
}

impl std::fmt::Debug for ProcessScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessScope").field("registered_names", &self.registered_names()).finish()
    }
}

impl RawScope for ProcessScope {
    fn url(&self) -> &str {
        URL
    }

    fn open(&self, name: &str, capacity: u32) -> Result<Arc<dyn RawLock>> {
        if capacity == 0 {
            return Err(Error::new(ErrorKind::Unsupported, "a lock needs a capacity of at least 1 permit")
                .with_name(name)
                .with_scope(URL));
        }
        match self.registry.open(name, capacity) {
            Ok(entry) => Ok(entry),
            Err(err) => Err(err.with_scope(URL)),
        }
    }

    fn inspect(&self, name: &str) -> Result<State> {
        let name = Name::new(name).map_err(|e| e.with_scope(URL))?;
        Ok(match self.registry.get(name.as_str()) {
            Some(entry) => entry.state(),
            None => State::idle(name),
        })
    }

    fn list(&self) -> Result<Vec<State>> {
        let mut states: Vec<State> = self
            .registry
            .entries()
            .iter()
            .map(|entry| entry.state())
            .filter(|state| state.in_use > 0 || state.waiters > 0)
            .collect();
        states.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(states)
    }
}

impl Entry {
    fn state(&self) -> State {
        let (waiters, waiting_exclusive) = self.semaphore.waiters();
        let in_use = self.semaphore.in_use();
        let holders =
            if in_use > 0 { vec![Holder { pid: std::process::id(), permits: in_use, held_for: None }] } else { vec![] };
        State {
            name: self.name.clone(),
            capacity: self.semaphore.capacity(),
            in_use,
            holders,
            waiters,
            waiting_exclusive,
            last_token: self.semaphore.last_token(),
        }
    }

    fn check_request(&self, permits: u32) -> Result<()> {
        let capacity = self.semaphore.capacity();
        if permits == 0 || permits > capacity {
            return Err(Error::new(
                ErrorKind::CapacityMismatch,
                format!("asked for {permits} permits of {}", describe(capacity)),
            )
            .with_name(self.name.as_str())
            .with_scope(URL));
        }
        Ok(())
    }
}

impl RawLock for Entry {
    fn name(&self) -> &Name {
        &self.name
    }

    fn scope_url(&self) -> &str {
        URL
    }

    fn capacity(&self) -> u32 {
        self.semaphore.capacity()
    }

    #[inline]
    fn try_acquire(&self, permits: u32) -> Result<Option<Lease>> {
        self.check_request(permits)?;
        Ok(self.semaphore.try_acquire(permits).map(|token| Lease::new(permits, token, 0)))
    }

    fn acquire(&self, permits: u32) -> BoxFuture<'_, Result<Lease>> {
        Box::pin(async move {
            self.check_request(permits)?;
            let token = self.semaphore.acquire(permits).await.expect("an acquire always ends in a grant");
            Ok(Lease::new(permits, token, 0))
        })
    }

    fn acquire_blocking(&self, permits: u32, deadline: Option<Instant>) -> Result<Lease> {
        if let Some(lease) = self.try_acquire(permits)? {
            return Ok(lease);
        }
        match block_on_until(self.semaphore.acquire(permits), deadline) {
            Some(token) => Ok(Lease::new(permits, token.expect("an acquire always ends in a grant"), 0)),
            None => Err(Error::new(ErrorKind::Timeout, "the deadline passed before the lock was granted")
                .with_name(self.name.as_str())
                .with_scope(URL)),
        }
    }

    #[inline]
    fn release(&self, lease: Lease) -> Result<()> {
        self.semaphore.release(lease.permits()).map_err(|_| {
            Error::new(ErrorKind::NotHeld, format!("released {} permits that were not held", lease.permits()))
                .with_name(self.name.as_str())
                .with_scope(URL)
        })
    }

    fn cede(&self, lease: Lease) -> BoxFuture<'_, Result<Lease>> {
        Box::pin(async move {
            match self.semaphore.cede(lease.permits()).await {
                Some(token) => Ok(Lease::new(lease.permits(), token, 0)),
                None => Ok(lease),
            }
        })
    }

    fn cede_blocking(&self, lease: Lease) -> Result<Lease> {
        match block_on_until(self.semaphore.cede(lease.permits()), None).flatten() {
            Some(token) => Ok(Lease::new(lease.permits(), token, 0)),
            None => Ok(lease),
        }
    }

    fn inspect(&self) -> Result<State> {
        Ok(self.state())
    }
}
