//! The uncontended paths: taking free permits when nobody waits, and giving them back
//! when nobody waits, each in one short hold of the record lock with no other
//! bookkeeping, and no system call. When the lock is free but the case is not the
//! uncontended one (a queue, permits taken), the caller goes on with the general path of
//! `ops` in the same hold of the lock ([`Fast::Locked`]); when the lock is taken, lost, or
//! the record is not as expected, it takes the general path from the start
//! ([`Fast::Busy`]). Both paths make the same writes (`hold`).

use super::wake::Wakes;
use super::{hold, lock, Grant, Locked, Rec};
use crate::layout::{EntryKind, Key};
use crate::sync::atomic::Ordering;

/// Pauses between two reads of a spinning request (see [`Rec::spin_until_free`]).
const PAUSES: u32 = 32;

/// What an uncontended path did.
pub(crate) enum Fast<'a, T> {
    /// It is done.
    Done(T),
    /// The record lock is held (and the record holds the name): go on with the general
    /// path under it.
    Locked(Locked<'a>),
    /// Nothing was done: take the general path.
    Busy,
}

impl<'a> Rec<'a> {
    /// Takes the record lock if it is free, the namespace is not lost and the record still
    /// holds the name; `None` otherwise.
    #[inline]
    fn try_lock(self) -> Option<Locked<'a>> {
        let (shm, r) = (self.shm, self.r);
        let guard = lock::try_lock(shm, &r.lock)?;
        let valid = !shm.is_lost() && r.key.load(Ordering::Acquire) == Key::ready(self.generation).0;
        valid.then(|| Locked { rec: self, _guard: guard, wakes: Wakes::default() })
    }

    /// Grants `permits` into this process's free entry `at` if the record lock is free,
    /// the name has `capacity` permits, nobody waits and the permits are free.
    #[inline]
    pub(crate) fn try_grant_fast(self, at: u32, permits: u32, capacity: u32) -> Fast<'a, Grant> {
        let r = self.r;
        let Some(locked) = self.try_lock() else { return Fast::Busy };
        let uncontended = r.capacity.load(Ordering::Acquire) == capacity
            && r.queue_head.load(Ordering::Acquire) == 0
            && r.available.load(Ordering::Acquire) >= permits;
        let e =
            self.shm.entry(at).ok().filter(|e| EntryKind::of(e.state.load(Ordering::Acquire)) == Some(EntryKind::Free));
        let (true, Some(e)) = (uncontended, e) else { return Fast::Locked(locked) };
        let _op = crate::crash::op("acquire");
        hold::fill(self, e, permits);
        match hold::commit(self, at, e, permits) {
            Ok(grant) => Fast::Done(grant),
            Err(_) => Fast::Locked(locked),
        }
    }

    /// Gives back this process's hold `at` (of `permits`, token `token`) if the record lock
    /// is free and nobody waits.
    #[inline]
    pub(crate) fn release_fast(self, at: u32, permits: u32, token: u64) -> Fast<'a, ()> {
        let r = self.r;
        let Some(locked) = self.try_lock() else { return Fast::Busy };
        let Ok(e) = self.shm.entry(at) else { return Fast::Busy };
        if !hold::is_ours(self, e, permits, token) {
            return Fast::Busy;
        }
        if r.queue_head.load(Ordering::Acquire) != 0 {
            return Fast::Locked(locked);
        }
        let _op = crate::crash::op("release");
        if hold::end(self, at, e).is_err() {
            return Fast::Locked(locked);
        }
        e.state.store(EntryKind::Free.bits(), Ordering::Release);
        crash_point!("release.freed");
        Fast::Done(())
    }
    /// Spins, reading only, while the permits are taken and nobody is queued, for at most
    /// `budget`. Returns whether the uncontended path may now succeed (the permits look
    /// free and the queue empty); `false` if a request is queued or time ran out.
    ///
    /// A blocking request spins so before it queues: a holder on another core often gives
    /// the lock back within microseconds, and a request that takes it then, nobody being
    /// queued, keeps two busy processes from handing the lock to each other on every
    /// grant. It reads seldom (every [`PAUSES`] pauses), so as not to take the record's
    /// cache line from the holder.
    pub(crate) fn spin_until_free(self, permits: u32, budget: std::time::Duration) -> bool {
        let r = self.r;
        let start = std::time::Instant::now();
        loop {
            if r.queue_head.load(Ordering::Relaxed) != 0 {
                return false;
            }
            if r.available.load(Ordering::Relaxed) >= permits && r.lock.load(Ordering::Relaxed) == 0 {
                return true;
            }
            for _ in 0..PAUSES {
                crate::sync::spin_loop();
            }
            if start.elapsed() >= budget {
                return false;
            }
        }
    }
}
