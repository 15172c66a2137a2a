//! The processes that have a name open, and the name's capacity, which may change only
//! while nobody has it open.

use latchkey_model::{describe_capacity, Error, ErrorKind, Result};

use super::list::{self, List};
use super::Locked;
use crate::layout::EntryKind;
use crate::shm::corrupted;
use crate::sync::atomic::Ordering;

impl Locked<'_> {
    /// Records that this process has the name open as `capacity`, in its free entry `at`.
    /// The name takes that capacity if nobody else has it open, holds or waits for it;
    /// otherwise a different capacity is a `CapacityMismatch` error.
    pub(crate) fn open_user(&mut self, at: u32, capacity: u32) -> Result<()> {
        let _op = crate::crash::op("open");
        let shm = self.rec.shm;
        let r = self.rec.r;
        self.ensure_capacity(capacity)?;
        let e = shm.entry(at)?;
        if EntryKind::of(e.state.load(Ordering::Acquire)) != Some(EntryKind::Free) {
            return Err(corrupted(format_args!("entry {at} is in use already")));
        }
        e.owner.store(shm.me(), Ordering::Relaxed);
        e.record.store(self.rec.index, Ordering::Relaxed);
        e.generation.store(self.rec.generation, Ordering::Relaxed);
        e.permits.store(0, Ordering::Relaxed);
        e.state.store(EntryKind::Open.bits(), Ordering::Release);
        crash_point!("open.committed");
        list::push_front(shm, r, List::Users, at, e)
    }

    /// Makes sure the name has `capacity` permits: if it has another capacity, it takes
    /// this one when nobody has it open, holds or waits for it, and is a
    /// `CapacityMismatch` error otherwise.
    pub(crate) fn ensure_capacity(&mut self, capacity: u32) -> Result<()> {
        let r = self.rec.r;
        let current = r.capacity.load(Ordering::Acquire);
        if current == capacity {
            return Ok(());
        }
        self.repair()?;
        if !self.is_unused() {
            return Err(Error::new(
                ErrorKind::CapacityMismatch,
                format!(
                    "the name is in use as {}, and was asked for as {}",
                    describe_capacity(current),
                    describe_capacity(capacity)
                ),
            ));
        }
        let _op = crate::crash::op("capacity");
        r.capacity.store(capacity, Ordering::Release);
        crash_point!("capacity.set");
        r.available.store(capacity, Ordering::Release);
        crash_point!("capacity.available");
        Ok(())
    }

    /// Records that this process no longer has the name open (entry `at`).
    pub(crate) fn close_user(&mut self, at: u32) -> Result<()> {
        let _op = crate::crash::op("close");
        let (shm, r) = (self.rec.shm, self.rec.r);
        let e = shm.entry(at)?;
        if EntryKind::of(e.state.load(Ordering::Acquire)) != Some(EntryKind::Open)
            || e.record.load(Ordering::Acquire) != self.rec.index
        {
            return Err(corrupted(format_args!("entry {at} is not an open name of this record")));
        }
        list::unlink(shm, r, List::Users, at, e)?;
        e.state.store(EntryKind::Free.bits(), Ordering::Release);
        crash_point!("close.freed");
        Ok(())
    }
}
