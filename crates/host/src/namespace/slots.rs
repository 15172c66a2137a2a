//! Process slots: taking one, and cleaning up what a process that died in it left.
//!
//! A process owns slot `s` while it holds the liveness lock on byte `LIVENESS_OFFSET + s`
//! of the file. A slot whose lock is free is free, whatever its fields say: its last
//! owner closed the namespace or died. A new owner first releases, withdraws and closes
//! every entry left in the slot's arena, as the dead owner would have (the entries are
//! its own now), so it never passes for the dead owner and nothing the dead one held
//! stays held.

use std::mem::size_of;
use std::os::fd::AsFd;

use latchkey_model::{Error, ErrorKind, Result};

use super::Namespace;
use crate::layout::*;
use crate::protocol::Rec;
use crate::shm::corrupted;
use crate::sync::atomic::Ordering;
use crate::sys;

/// Occupied slots a newcomer checks for a dead owner before it grows the table instead.
const DEAD_CHECKS: u32 = 64;

impl Namespace {
    /// Takes a free process slot (growing the table if every slot is taken), cleans up
    /// what a dead process left in it, and makes it this process's.
    pub(crate) fn claim_slot(&self) -> Result<u32> {
        let _op = crate::crash::op("claim");
        let shm = &self.shm;
        loop {
            let slots = shm.slots();
            let hint = shm.header().slot_hint.load(Ordering::Relaxed) % slots.max(1);
            let order = (0..slots).map(|i| (hint + i) % slots);
            // Slots that look free first (one system call each that is not); then a few
            // that look taken, whose owner may have died.
            for slot in order.clone().filter(|&s| shm.slot(s).is_ok_and(|p| p.in_use.load(Ordering::Acquire) == 0)) {
                if self.try_take(slot)? {
                    return Ok(slot);
                }
            }
            for slot in order.take(DEAD_CHECKS as usize) {
                if self.try_take(slot)? {
                    return Ok(slot);
                }
            }
            self.grow_slots(slots)?;
        }
    }

    /// Takes `slot` if its liveness lock is free.
    fn try_take(&self, slot: u32) -> Result<bool> {
        let shm = &self.shm;
        let byte = LIVENESS_OFFSET + u64::from(slot);
        let unavailable =
            |e: std::io::Error| Error::new(ErrorKind::Unavailable, format!("cannot take a process slot: {e}"));
        if !sys::lock::try_lock_byte(shm.file().as_fd(), byte).map_err(unavailable)? {
            return Ok(false);
        }
        crash_point!("claim.locked");
        shm.set_me(slot);
        self.scrub(slot)?;
        let proc_slot = shm.slot(slot)?;
        proc_slot.pid_ns.store(self.pid_ns, Ordering::Relaxed);
        proc_slot.pid.store(std::process::id(), Ordering::Relaxed);
        proc_slot.since_ns.store(sys::now_ns(), Ordering::Relaxed);
        proc_slot.in_use.store(1, Ordering::Release);
        crash_point!("claim.marked");
        shm.header().slot_hint.store(slot + 1, Ordering::Relaxed);
        Ok(true)
    }

    /// Releases, withdraws and closes every entry left in `slot`'s arena: what its last
    /// owner, dead, held, waited for and had open. Runs as the slot's new owner.
    fn scrub(&self, slot: u32) -> Result<()> {
        let _op = crate::crash::op("scrub");
        let shm = &self.shm;
        for (at, e) in shm.arena_entries(slot)? {
            let state = e.state.load(Ordering::Acquire);
            let Some(kind) = EntryKind::of(state) else {
                return Err(corrupted(format_args!("entry {at} has an unknown state {state:#x}")));
            };
            if kind == EntryKind::Free {
                continue;
            }
            let (index, generation) = (e.record.load(Ordering::Acquire), e.generation.load(Ordering::Acquire));
            let rec = Rec::new(shm, index, generation)?;
            if Key(rec.r.key.load(Ordering::Acquire)) != Key::ready(generation) {
                // The record no longer has the name this entry was for: nothing links it.
                e.state.store(EntryKind::Free.bits(), Ordering::Release);
                crash_point!("scrub.stale");
                continue;
            }
            let mut locked = rec.lock()?;
            match kind {
                EntryKind::Hold => locked.release(at)?,
                EntryKind::Wait => locked.withdraw(at)?,
                EntryKind::Open => locked.close_user(at)?,
                EntryKind::Free => {}
            }
        }
        Ok(())
    }

    /// Adds the next chunk of process slots, unless another process did since `seen` slots.
    fn grow_slots(&self, seen: u32) -> Result<()> {
        let header = self.shm.header();
        // Count a chunk that a process that died published without counting.
        let mut published = 0;
        for (chunk, at) in header.slot_chunks.iter().enumerate() {
            if at.load(Ordering::Acquire) == 0 {
                break;
            }
            published += chunk_items(chunk, SLOT_BASE);
        }
        header.slots.fetch_max(published, Ordering::AcqRel);
        if header.slots.load(Ordering::Acquire) != seen {
            return Ok(());
        }
        let chunk = header.slot_chunks.iter().position(|at| at.load(Ordering::Acquire) == 0).ok_or_else(|| {
            Error::new(ErrorKind::Unavailable, "the namespace has as many process slots as its layout can name")
        })?;
        let items = chunk_items(chunk, SLOT_BASE);
        let at = self.grow_pages(u64::from(items) * size_of::<ProcSlot>() as u64)?;
        if header.slot_chunks[chunk].compare_exchange(0, at, Ordering::AcqRel, Ordering::Acquire).is_err() {
            return Ok(()); // another process grew it first; our space is lost, not reused
        }
        crash_point!("claim.chunk_published");
        header.slots.fetch_max(published + items, Ordering::AcqRel);
        crash_point!("claim.chunk_counted");
        Ok(())
    }
}
