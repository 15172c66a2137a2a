//! The uncontended paths: taking free permits when nobody waits, and giving them back
//! when nobody waits, each in one short hold of the record lock with no other
//! bookkeeping, and no system call. Anything else (the record lock taken, a queue, a
//! lost namespace, a record lock left by a dead owner) returns `None`, and the caller
//! takes the general path of `ops`, which makes the same writes (`hold`).

use super::{hold, lock, Grant, Rec};
use crate::layout::{EntryKind, Key};
use crate::sync::atomic::Ordering;

impl Rec<'_> {
    /// Grants `permits` into this process's free entry `at` if the record lock is free,
    /// the name has `capacity` permits, nobody waits and the permits are free; `None`
    /// otherwise.
    #[inline]
    pub(crate) fn try_grant_fast(self, at: u32, permits: u32, capacity: u32) -> Option<Grant> {
        let (shm, r) = (self.shm, self.r);
        let locked = lock::try_lock(shm, &r.lock)?;
        let uncontended = !shm.is_lost()
            && r.key.load(Ordering::Acquire) == Key::ready(self.generation).0
            && r.capacity.load(Ordering::Acquire) == capacity
            && r.queue_head.load(Ordering::Acquire) == 0
            && r.available.load(Ordering::Acquire) >= permits;
        let e = shm.entry(at).ok().filter(|e| EntryKind::of(e.state.load(Ordering::Acquire)) == Some(EntryKind::Free));
        let (true, Some(e)) = (uncontended, e) else { return None };
        let _op = crate::crash::op("acquire");
        hold::fill(self, e, permits);
        let grant = hold::commit(self, at, e, permits).ok();
        drop(locked);
        grant
    }

    /// Gives back this process's hold `at` (of `permits`, token `token`) if the record lock
    /// is free and nobody waits; `false` otherwise.
    #[inline]
    pub(crate) fn release_fast(self, at: u32, permits: u32, token: u64) -> bool {
        let (shm, r) = (self.shm, self.r);
        let Some(locked) = lock::try_lock(shm, &r.lock) else { return false };
        let Ok(e) = shm.entry(at) else { return false };
        if r.queue_head.load(Ordering::Acquire) != 0
            || r.key.load(Ordering::Acquire) != Key::ready(self.generation).0
            || !hold::is_ours(self, e, permits, token)
        {
            return false;
        }
        let _op = crate::crash::op("release");
        if hold::end(self, at, e).is_err() {
            return false;
        }
        e.state.store(EntryKind::Free.bits(), Ordering::Release);
        crash_point!("release.freed");
        drop(locked);
        true
    }
}
