//! What `inspect` shows of a record.

use latchkey_model::Result;

use super::list::{self, List};
use super::Locked;
use crate::sync::atomic::Ordering;

/// A record's state, read under its lock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Snapshot {
    pub capacity: u32,
    pub available: u32,
    /// Each hold: its process slot, permits, and since when (monotonic ns).
    pub holds: Vec<(u32, u32, u64)>,
    /// Each queued request, in queue order: its process slot, permits, and since when
    /// (monotonic ns).
    pub queued: Vec<(u32, u32, u64)>,
    pub last_token: u64,
}

impl Locked<'_> {
    /// The record's state now.
    pub(crate) fn snapshot(&self) -> Result<Snapshot> {
        let (shm, r) = (self.rec.shm, self.rec.r);
        let describe = |list| -> Result<Vec<(u32, u32, u64)>> {
            Ok(list::entries(shm, r, list)?
                .iter()
                .map(|(_, e)| {
                    let (slot, permits) = (e.owner.load(Ordering::Acquire), e.permits.load(Ordering::Acquire));
                    (slot, permits, e.since_ns.load(Ordering::Acquire))
                })
                .collect())
        };
        let (holds, queued) = (describe(List::Holds)?, describe(List::Queue)?);
        Ok(Snapshot {
            capacity: r.capacity.load(Ordering::Acquire),
            available: r.available.load(Ordering::Acquire),
            holds,
            queued,
            last_token: r.last_token.load(Ordering::Acquire),
        })
    }

    /// Whether nobody holds, waits for or has the record open.
    pub(crate) fn is_unused(&self) -> bool {
        let r = self.rec.r;
        r.holds.load(Ordering::Acquire) == 0
            && r.queue_head.load(Ordering::Acquire) == 0
            && r.users.load(Ordering::Acquire) == 0
    }
}
