//! Snapshots of a name's state, as `inspect` reports them.

use std::time::Duration;

use crate::Name;

/// One holder of a name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    /// The process that holds the permits.
    pub pid: u32,
    /// How many permits it holds.
    pub permits: u32,
    /// How long it has held them, where the scope records it.
    pub held_for: Option<Duration>,
}

/// One request waiting for a name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Waiter {
    /// The process that waits (0 where the scope cannot tell, as for a process of another
    /// pid namespace).
    pub pid: u32,
    /// How many permits it asks for.
    pub permits: u32,
    /// How long it has waited, where the scope records it.
    pub waiting_for: Option<Duration>,
}

/// A snapshot of one name.
#[derive(Clone, Debug, PartialEq, Eq)]
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
    /// The fencing token of the latest grant, 0 if none yet.
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
