//! Named locks for threads, async tasks, processes and fleets.
//!
//! A lock is found by **name** (`"db-migrations"`, `"user/42"`) in a **scope**
//! ([`Scope::open`]`("process:")`). Four primitives work in every scope: [`Mutex`],
//! writer-preferring [`RwLock`], counting [`Semaphore`] and [`IntervalLock`]. Each has
//! async, blocking (no runtime needed), try and timeout forms, and every grant carries a
//! fencing token ([`Guard::fencing_token`]).
//!
//! ```
//! let scope = latchkey::Scope::open("process:")?;
//! let mutex = scope.mutex("user/42")?;
//! let first = mutex.lock_blocking()?.fencing_token();
//! let second = mutex.lock_blocking()?.fencing_token();
//! assert!(second > first);
//! # Ok::<(), latchkey::Error>(())
//! ```
//!
//! Under every primitive is one fair, weighted semaphore per name, which each scope
//! implements through the contract of the `latchkey-model` crate (`RawScope`, `RawLock`).
//! Users hold guards, never the contract's raw leases; an implementer of a scope takes
//! the contract from `latchkey-model` and wraps its scope with [`Scope::from_raw`].

mod backends;
mod guard;
mod handle;
mod interval;
mod lock;
mod mutex;
mod rwlock;
mod scope;
mod semaphore;
mod url;

pub use guard::Guard;
pub use interval::{IntervalGuard, IntervalLock};
pub use latchkey_model::{
    Error, ErrorKind, Holder, Identity, Name, Result, State, Waiter, MAX_NAME_LEN, MAX_SEMAPHORE_CAPACITY,
    RWLOCK_CAPACITY,
};
pub use lock::Lock;
pub use mutex::Mutex;
pub use rwlock::RwLock;
pub use scope::Scope;
pub use semaphore::Semaphore;
pub use url::ScopeUrl;
