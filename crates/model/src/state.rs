//! Snapshots of a name's state, as `inspect` reports them.
//!
//! The structs are `#[non_exhaustive]`: scopes over a network add what they know of a
//! holder (its host, its session) without breaking users. Build them with `new` and the
//! `with_` methods.

use std::time::Duration;

use crate::Name;

/// Where a holder or waiter runs, beyond its pid, where the scope can tell: its host,
/// and its session (an etcd lease, a database session).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Identity {
    /// The host name of the process's machine.
    pub host: Option<String>,
    /// The session the request belongs to.
    pub session: Option<String>,
}

impl Identity {
    /// With the host name.
    pub fn with_host(mut self, host: impl Into<String>) -> Identity {
        self.host = Some(host.into());
        self
    }

    /// With the session.
    pub fn with_session(mut self, session: impl Into<String>) -> Identity {
        self.session = Some(session.into());
        self
    }
}

/// One holder of a name.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Holder {
    /// The process that holds the permits (0 where the scope cannot tell).
    pub pid: u32,
    /// How many permits it holds.
    pub permits: u32,
    /// How long it has held them, where the scope records it.
    pub held_for: Option<Duration>,
    /// The holder's host and session, where the scope records them.
    pub identity: Identity,
}

impl Holder {
    /// A holder of `permits`, by `pid`.
    pub fn new(pid: u32, permits: u32) -> Holder {
        Holder { pid, permits, held_for: None, identity: Identity::default() }
    }

    /// With how long it has held the permits.
    pub fn held_for(mut self, held_for: Option<Duration>) -> Holder {
        self.held_for = held_for;
        self
    }

    /// With its host and session.
    pub fn with_identity(mut self, identity: Identity) -> Holder {
        self.identity = identity;
        self
    }
}

/// One request waiting for a name.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Waiter {
    /// The process that waits (0 where the scope cannot tell, as for a process of another
    /// pid namespace).
    pub pid: u32,
    /// How many permits it asks for.
    pub permits: u32,
    /// How long it has waited, where the scope records it.
    pub waiting_for: Option<Duration>,
    /// The waiter's host and session, where the scope records them.
    pub identity: Identity,
}

impl Waiter {
    /// A request for `permits`, by `pid`.
    pub fn new(pid: u32, permits: u32) -> Waiter {
        Waiter { pid, permits, waiting_for: None, identity: Identity::default() }
    }

    /// With how long it has waited.
    pub fn waiting_for(mut self, waiting_for: Option<Duration>) -> Waiter {
        self.waiting_for = waiting_for;
        self
    }

    /// With its host and session.
    pub fn with_identity(mut self, identity: Identity) -> Waiter {
        self.identity = identity;
        self
    }
}

/// A snapshot of one name. Made from [`State::idle`], with its fields set.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct State {
    /// The name.
    pub name: Name,
    /// Its capacity: 1 for a mutex, n for a semaphore, [`RWLOCK_CAPACITY`](crate::RWLOCK_CAPACITY)
    /// for a reader-writer lock; 0 when nobody has the name open.
    pub capacity: u32,
    /// Permits held now.
    pub in_use: u32,
    /// Holders, where the scope can tell them apart (see each scope's docs).
    pub holders: Vec<Holder>,
    /// Requests waiting in the queue.
    pub waiters: usize,
    /// The waiting requests, in queue order (the first is granted next).
    pub queue: Vec<Waiter>,
    /// Waiting requests that ask for the whole capacity (writers, for a reader-writer lock).
    pub waiting_exclusive: usize,
    /// The fencing token of the latest grant, 0 if none yet. A scope over a network (etcd)
    /// knows only the requests on the server: there it is the newest token held now.
    pub last_token: u64,
}

impl State {
    /// The state of a name that nobody holds or waits for.
    pub fn idle(name: Name) -> Self {
        State {
            name,
            capacity: 0,
            in_use: 0,
            holders: Vec::new(),
            waiters: 0,
            queue: Vec::new(),
            waiting_exclusive: 0,
            last_token: 0,
        }
    }

    /// Whether any permit is held.
    pub fn is_locked(&self) -> bool {
        self.in_use > 0
    }
}
