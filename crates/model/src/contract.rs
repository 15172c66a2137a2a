//! The scope contract: what every scope implements, once, for every primitive.
//!
//! Every operation that may cross a network has an async form; a scope over a network
//! implements those and runs its own small runtime for the blocking forms, so the user
//! needs none. A local scope implements the blocking forms, and the async forms default
//! to them (they never wait long).

use std::fmt;
use std::future::{ready, Future};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    /// open with another capacity. Opening does not wait on a network: a scope whose
    /// capacities live on a server checks them with every request instead.
    fn open(&self, name: &str, capacity: u32) -> Result<Arc<dyn RawLock>>;

    /// [`open`](RawScope::open) for a handle used for one acquire and then dropped, as
    /// locking by name does. A scope may make it cheaper by checking the capacity when the
    /// lock is taken instead of keeping the name open (the host scope does); by default it
    /// is `open`.
    fn open_once(&self, name: &str, capacity: u32) -> Result<Arc<dyn RawLock>> {
        self.open(name, capacity)
    }

    /// A snapshot of `name`; a name nobody has open is [`State::idle`].
    fn inspect(&self, name: &str) -> Result<State>;

    /// The async form of [`inspect`](RawScope::inspect).
    fn inspect_async<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<State>> {
        Box::pin(ready(self.inspect(name)))
    }

    /// Snapshots of every name that is held or waited for.
    fn list(&self) -> Result<Vec<State>>;

    /// The async form of [`list`](RawScope::list).
    fn list_async(&self) -> BoxFuture<'_, Result<Vec<State>>> {
        Box::pin(ready(self.list()))
    }

    /// Where the scope keeps its state, for people to read: the host scope's namespace
    /// directory, say. `None` where there is nothing to show.
    fn location(&self) -> Option<String> {
        None
    }

    /// Gives back everything the scope holds and waits for (on a server: ends the
    /// session), after the releases handed to the background have run. Operations after
    /// it fail with `Closed`. Local scopes have nothing to do.
    fn close(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(ready(Ok(())))
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

    /// The async form of [`try_acquire`](RawLock::try_acquire).
    ///
    /// Cancel safety: dropping the future leaves nothing held or queued.
    fn try_acquire_async(&self, permits: u32) -> BoxFuture<'_, Result<Option<Lease>>> {
        Box::pin(ready(self.try_acquire(permits)))
    }

    /// Waits in FIFO order for `permits`, until `deadline` if one is given: then the
    /// scope withdraws the request and fails with `Timeout` (see
    /// [`with_deadline`](crate::with_deadline)). The future needs no particular runtime.
    ///
    /// Cancel safety: dropping the future at any await point withdraws the request (on a
    /// server too), and a grant that raced with the drop is given back.
    fn acquire(&self, permits: u32, deadline: Option<Instant>) -> BoxFuture<'_, Result<Lease>>;

    /// Blocks the thread in FIFO order for `permits`, until `deadline` if one is given
    /// (a `Timeout` error after it).
    fn acquire_blocking(&self, permits: u32, deadline: Option<Instant>) -> Result<Lease>;

    /// Gives the permits of `lease` back. A lease that this name did not grant is a
    /// `NotHeld` error; one the scope took away meanwhile is `HandleLost`.
    fn release(&self, lease: Lease) -> Result<()>;

    /// The async form of [`release`](RawLock::release).
    fn release_async(&self, lease: Lease) -> BoxFuture<'_, Result<()>> {
        Box::pin(ready(self.release(lease)))
    }

    /// Gives `lease` back without making the caller wait, as dropping a guard does: a
    /// scope over a network hands it to its background task. A failure is logged
    /// (`tracing`, target `latchkey`), never silently lost.
    fn release_in_background(&self, lease: Lease) {
        let token = lease.token();
        if let Err(e) = self.release(lease) {
            tracing::warn!(target: "latchkey", token, "a dropped guard's release failed: {e}");
        }
    }

    /// A snapshot of the name.
    fn inspect(&self) -> Result<State>;

    /// The async form of [`inspect`](RawLock::inspect).
    fn inspect_async(&self) -> BoxFuture<'_, Result<State>> {
        Box::pin(ready(self.inspect()))
    }

    /// `Ok` while `lease` is still held; a `HandleLost` error once the scope has taken it
    /// away (an expired lease, a dropped connection). Local scopes never lose a lease.
    fn check(&self, lease: &Lease) -> Result<()> {
        let _ = lease;
        Ok(())
    }

    /// The async form of [`check`](RawLock::check).
    fn check_async<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<()>> {
        Box::pin(ready(self.check(lease)))
    }

    /// Whether `lease` is known to be lost, from what the scope has already seen (its
    /// keep-alive, its watcher): cheap enough to call often, as a supervisor of a command
    /// does. [`check`](RawLock::check) looks now. By default, `check` fails.
    fn is_lost(&self, lease: &Lease) -> bool {
        self.check(lease).is_err()
    }

    /// A future that completes once `lease` is lost (its session's keep-alive failed,
    /// its lease expired, its request key disappeared), and never while it is held.
    /// By default it never completes: local scopes do not lose holds behind the holder's back.
    fn lost(&self, lease: &Lease) -> BoxFuture<'static, ()> {
        let _ = lease;
        Box::pin(std::future::pending())
    }

    /// The optional ability to cede, if the scope has it; the interval lock needs it.
    fn as_cede(&self) -> Option<&dyn RawCede> {
        None
    }
}

/// The optional ability of a [`RawLock`] to hand its grant to the waiters and queue again.
pub trait RawCede: Send + Sync {
    /// If anyone waits, hands the permits of `lease` to the head of the queue and waits
    /// again at the back; if nobody waits, gives `lease` straight back.
    ///
    /// Cancel safety: dropping the future gives up the lock.
    fn cede(&self, lease: Lease) -> BoxFuture<'_, Result<Lease>>;

    /// The blocking form of [`cede`](RawCede::cede).
    fn cede_blocking(&self, lease: Lease) -> Result<Lease>;

    /// How long a cede's first round trip may take before a deadline counts: a scope over
    /// a network gives a cede with nobody waiting back only after a round trip, which a
    /// short timeout must not cut (as its acquire's first trip on a free lock is not).
    fn first_trip_grace(&self) -> Duration {
        Duration::ZERO
    }
}
