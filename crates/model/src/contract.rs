//! The scope contract: what every scope implements, once, for every primitive.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use crate::{Lease, Name, Result, State};

/// A boxed, sendable future, as the contract's async methods return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A scope: a namespace of names and the engine that grants them.
///
/// Every primitive is a request of `permits` out of a name's `capacity` on one fair
/// (FIFO), weighted semaphore per name. A scope implements that semaphore; the
/// primitives of the `latchkey` crate are built on it and work in every scope.
pub trait RawScope: Send + Sync + fmt::Debug + 'static {
    /// The scope's URL, as errors and `inspect` name it (`process:`, `host:/run/x`).
    fn url(&self) -> &str;

    /// Resolves `name` to its semaphore of `capacity` permits, creating it if nobody has it open.
    ///
    /// Fails with `InvalidName` for an invalid name and `CapacityMismatch` when the name is
    /// open with another capacity.
    fn open(&self, name: &str, capacity: u32) -> Result<Arc<dyn RawLock>>;

    /// A snapshot of `name`; a name nobody has open is [`State::idle`].
    fn inspect(&self, name: &str) -> Result<State>;

    /// Snapshots of every name that is held or waited for.
    fn list(&self) -> Result<Vec<State>>;

    /// [`open`](RawScope::open) for a handle used for one acquire and then dropped, as
    /// locking by name does. A scope may make it cheaper by checking the capacity when the
    /// lock is taken instead of keeping the name open (the host scope does); by default it
    /// is `open`.
    fn open_once(&self, name: &str, capacity: u32) -> Result<Arc<dyn RawLock>> {
        self.open(name, capacity)
    }

    /// Where the scope keeps its state, for people to read: the host scope's namespace
    /// directory, say. `None` where there is nothing to show.
    fn location(&self) -> Option<String> {
        None
    }
}

/// One name's fair, weighted semaphore in a scope.
///
/// Grants are FIFO: a request that cannot be granted at once waits behind every earlier
/// one, and nothing barges past a waiting request.
pub trait RawLock: Send + Sync + 'static {
    /// The name.
    fn name(&self) -> &Name;

    /// The URL of the scope the name lives in.
    fn scope_url(&self) -> &str;

    /// The number of permits of the name.
    fn capacity(&self) -> u32;

    /// Takes `permits` if that is possible now without passing a waiter; `None` otherwise.
    fn try_acquire(&self, permits: u32) -> Result<Option<Lease>>;

    /// Waits in FIFO order for `permits`.
    ///
    /// Cancel safety: dropping the future leaves nothing behind, and a grant that raced
    /// with the drop is passed on to the next waiter.
    fn acquire(&self, permits: u32) -> BoxFuture<'_, Result<Lease>>;

    /// Blocks the thread in FIFO order for `permits`, until `deadline` if one is given
    /// (a `Timeout` error after it).
    fn acquire_blocking(&self, permits: u32, deadline: Option<Instant>) -> Result<Lease>;

    /// Gives the permits of `lease` back. A lease that this name did not grant is a `NotHeld` error.
    fn release(&self, lease: Lease) -> Result<()>;

    /// If anyone waits, hands the permits of `lease` to the head of the queue and waits
    /// again at the back; if nobody waits, gives `lease` straight back.
    ///
    /// Cancel safety: dropping the future gives up the lock.
    fn cede(&self, lease: Lease) -> BoxFuture<'_, Result<Lease>>;

    /// The blocking form of [`cede`](RawLock::cede).
    fn cede_blocking(&self, lease: Lease) -> Result<Lease>;

    /// A snapshot of the name.
    fn inspect(&self) -> Result<State>;

    /// `Ok` while `lease` is still held; a `HandleLost` error once the scope has taken it
    /// away (an expired lease, a dropped connection). Local scopes never lose a lease.
    fn check(&self, lease: &Lease) -> Result<()> {
        let _ = lease;
        Ok(())
    }

    /// Whether `lease` is known to be lost, from what the scope has already seen (its
    /// keep-alive, its watcher): cheap enough to call often, as a supervisor of a command
    /// does. [`check`](RawLock::check) looks now. By default, `check` fails.
    fn is_lost(&self, lease: &Lease) -> bool {
        self.check(lease).is_err()
    }
}
