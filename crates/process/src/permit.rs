//! Permits: held grants of the process scope.

use std::fmt;
use std::ptr::NonNull;
use std::sync::Arc;

use latchkey_model::{block_on_until, Name};

use crate::registry::Entry;

/// Held permits of one name. Dropping it releases them.
///
/// A permit points at its entry without owning it: an entry stays registered, and so
/// alive, while any of its permits is held (see [`registry`](crate::registry)). A slow
/// release relies on the queue lock instead (an entry is only retired under it), and a
/// cede, which waits without holding permits, first takes an owning reference.
#[must_use = "if unused the permits are released at once"]
pub struct Permit {
    entry: NonNull<Entry>,
    /// A `u32` kept in 64 bits: the permit moves through memory as whole words, and a
    /// narrower field there makes the CPU's store-to-load forwarding fail (measured:
    /// 17 against 7 ns per lock and unlock).
    permits: u64,
    token: u64,
}

// SAFETY: a `Permit` only reads its `Entry` through shared references, and `Entry` is
// `Sync` (atomics and a mutex); the entry outlives the permit (see the type's docs).
unsafe impl Send for Permit {}
// SAFETY: as for `Send`: `&Permit` gives only shared access to a `Sync` entry.
unsafe impl Sync for Permit {}

impl Permit {
    /// Takes `permits` of `entry` if they are free and nobody waits.
    #[inline]
    pub(crate) fn try_acquire(entry: &Arc<Entry>, permits: u32) -> Option<Permit> {
        let token = entry.semaphore.try_acquire(permits)?;
        Some(Permit::granted(entry, permits, token))
    }

    /// Wraps a grant of `permits` of `entry` with fencing token `token`.
    #[inline]
    pub(crate) fn granted(entry: &Arc<Entry>, permits: u32, token: u64) -> Permit {
        // `Arc::as_ptr` keeps the provenance of the whole allocation, which
        // `owned_entry` needs to rebuild an `Arc`.
        // SAFETY: a pointer into a live `Arc` is not null.
        let entry = unsafe { NonNull::new_unchecked(Arc::as_ptr(entry).cast_mut()) };
        Permit { entry, permits: u64::from(permits), token }
    }

    /// How many permits are held.
    pub fn permits(&self) -> u32 {
        self.permits as u32
    }

    /// The fencing token of the grant.
    pub fn token(&self) -> u64 {
        self.token
    }

    /// The name.
    pub fn name(&self) -> &Name {
        &self.entry().name
    }

    /// Releases the permits. Waiters are granted in FIFO order.
    #[inline]
    pub fn release(self) {
        let (entry, permits) = (self.entry, self.permits());
        std::mem::forget(self);
        release(entry, permits);
    }

    /// If anyone waits, hands the permits to the head of the queue and waits again at
    /// the back, returning the new grant; if nobody waits, returns `self`.
    ///
    /// Cancel safety: dropping the future gives the permits up.
    pub async fn cede(self) -> Permit {
        let entry = self.owned_entry();
        let (permits, held) = (self.permits(), self.token);
        std::mem::forget(self);
        let token = entry.semaphore.cede(permits).await.unwrap_or(held);
        Permit::granted(&entry, permits, token)
    }

    /// The blocking form of [`cede`](Permit::cede).
    pub fn cede_blocking(self) -> Permit {
        let entry = self.owned_entry();
        let (permits, held) = (self.permits(), self.token);
        std::mem::forget(self);
        let token = block_on_until(entry.semaphore.cede(permits), None).flatten().unwrap_or(held);
        Permit::granted(&entry, permits, token)
    }

    fn entry(&self) -> &Entry {
        // SAFETY: the permits are held for as long as `self` lives, so the entry is
        // registered and alive (see the type's docs).
        unsafe { self.entry.as_ref() }
    }

    /// An owning reference to the entry, for paths that may outlive the permits.
    fn owned_entry(&self) -> Arc<Entry> {
        owned(self.entry)
    }
}

/// An owning reference to the entry of held permits.
fn owned(entry: NonNull<Entry>) -> Arc<Entry> {
    let ptr = entry.as_ptr().cast_const();
    // SAFETY: `ptr` is `Arc::as_ptr` of the registry's `Arc<Entry>` (see
    // `Permit::granted`), and that `Arc` is alive while the permits are held, so the
    // strong count is at least 1 and the allocation is the one `from_raw` expects.
    unsafe {
        Arc::increment_strong_count(ptr);
        Arc::from_raw(ptr)
    }
}

/// Releases `permits` of the entry at `entry`; they must be held.
#[inline]
fn release(entry: NonNull<Entry>, permits: u32) {
    // SAFETY: the permits are held until the release below, so the entry is alive.
    let semaphore = unsafe { &entry.as_ref().semaphore };
    if !semaphore.release_held(permits) {
        release_slow(entry, permits);
    }
}

#[cold]
fn release_slow(entry: NonNull<Entry>, permits: u32) {
    // SAFETY: the permits are held until `release_slow` gives them back under the
    // queue lock, and an entry is only retired (and freed) under that same lock, after
    // `release_slow` has let go of it and touches it no more.
    let semaphore = unsafe { &entry.as_ref().semaphore };
    semaphore.release_slow(permits).expect("a permit releases exactly what it holds");
}

impl Drop for Permit {
    #[inline]
    fn drop(&mut self) {
        release(self.entry, self.permits());
    }
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("name", self.name())
            .field("permits", &self.permits)
            .field("token", &self.token)
            .finish()
    }
}
