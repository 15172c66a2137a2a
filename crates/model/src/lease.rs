//! Leases: the scope-level record of a grant.

use std::any::Any;
use std::fmt;

/// The capacity of a name opened as a reader-writer lock: a reader asks for 1 permit,
/// a writer for all of them.
pub const RWLOCK_CAPACITY: u32 = 1 << 30;

/// The largest capacity a semaphore may have; larger values are reserved for [`RWLOCK_CAPACITY`].
pub const MAX_SEMAPHORE_CAPACITY: u32 = RWLOCK_CAPACITY - 1;

/// A grant of `permits` on one name, as a scope hands it out.
///
/// A lease is not `Clone`: it is given back exactly once, to
/// [`RawLock::release`](crate::RawLock::release) or
/// [`RawCede::cede`](crate::RawCede::cede). Users never see leases, only the guards of
/// the `latchkey` crate that own them. A scope keeps what it needs to find the grant
/// again in the lease: a number (`ticket`), or anything else (`data`: a key, a
/// session, a connection).
#[must_use = "a lease that is dropped is never released"]
pub struct Lease {
    permits: u32,
    token: u64,
    ticket: u64,
    data: Option<Box<dyn Any + Send + Sync>>,
}

impl Lease {
    /// A lease of `permits` with fencing token `token`; `ticket` is the scope's own
    /// record of the grant (a slot, a key revision), 0 if it needs none.
    pub fn new(permits: u32, token: u64, ticket: u64) -> Self {
        Lease { permits, token, ticket, data: None }
    }

    /// The lease with the scope's own record of the grant attached.
    pub fn with_data(mut self, data: impl Any + Send + Sync) -> Self {
        self.data = Some(Box::new(data));
        self
    }

    /// The record [`with_data`](Lease::with_data) attached, if it is a `T`.
    pub fn data<T: Any>(&self) -> Option<&T> {
        self.data.as_ref()?.downcast_ref()
    }

    /// How many permits the lease holds.
    pub fn permits(&self) -> u32 {
        self.permits
    }

    /// The fencing token: strictly greater than that of every earlier grant of the name.
    pub fn token(&self) -> u64 {
        self.token
    }

    /// The scope's own record of the grant.
    pub fn ticket(&self) -> u64 {
        self.ticket
    }
}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("permits", &self.permits)
            .field("token", &self.token)
            .field("ticket", &self.ticket)
            .field("data", &self.data.is_some())
            .finish()
    }
}

/// A capacity as a reader would say it: "a mutex (capacity 1)", "a reader-writer lock",
/// "a semaphore of 3 permits".
pub fn describe_capacity(capacity: u32) -> String {
    match capacity {
        1 => "a mutex (capacity 1)".to_string(),
        RWLOCK_CAPACITY => "a reader-writer lock".to_string(),
        n => format!("a semaphore of {n} permits"),
    }
}
