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
use crate::protocol::{disown, Rec};
use crate::shm::{corrupted, published};
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
            // A slot that looks free costs one system call; one that looks taken, whose
            // owner may have died, too: at most `DEAD_CHECKS` of those are checked, from
            // where the last newcomer that ran out of checks stopped, before the table
            // grows instead.
            let hint = shm.header().slot_hint.load(Ordering::Relaxed) % slots.max(1);
            let (mut dead_checks, mut last_checked) = (0, hint);
            for slot in (0..slots).map(|i| (hint + i) % slots) {
                let looks_taken = shm.slot(slot)?.in_use.load(Ordering::Acquire) != 0;
                if looks_taken {
                    if dead_checks == DEAD_CHECKS {
                        continue;
                    }
                    dead_checks += 1;
                    last_checked = slot;
                }
                if self.try_take(slot)? {
                    return Ok(slot);
                }
            }
            if dead_checks == DEAD_CHECKS {
                shm.header().slot_hint.store(last_checked + 1, Ordering::Relaxed);
            }
            if self.grow_and_take(slots)? {
                return Ok(slots);
            }
        }
    }

    /// Adds the next chunk of process slots, unless another process did since `seen`
    /// slots, and takes its first slot. Counted in `slot_growers` from before it takes
    /// that slot's liveness lock until its pid is in: the `claimers` of a slot that may
    /// not exist yet (see `try_take`).
    fn grow_and_take(&self, seen: u32) -> Result<bool> {
        let growers = &self.shm.header().slot_growers;
        growers.fetch_add(1, Ordering::SeqCst);
        crash_point!("claim.growing");
        let taken = self.grow_slots(seen).and_then(|held| Ok(held && self.try_take(seen)?));
        growers.fetch_sub(1, Ordering::SeqCst);
        taken
    }

    /// Takes `slot` if its liveness lock is free.
    fn try_take(&self, slot: u32) -> Result<bool> {
        let shm = &self.shm;
        let proc_slot = shm.slot(slot)?;
        let byte = LIVENESS_OFFSET + u64::from(slot);
        // Counted before the lock and until our pid is in: from the lock on, the slot is
        // alive, and a waiter must not take the pid there (a dead owner's, perhaps reused
        // by a stranger since) for ours. A process that dies counted leaves the slot's
        // waiters checking periodically instead of watching its pid.
        proc_slot.claimers.fetch_add(1, Ordering::SeqCst);
        crash_point!("claim.counted");
        let locked = sys::lock::try_lock_byte(shm.file().as_fd(), byte);
        if !matches!(locked, Ok(true)) {
            proc_slot.claimers.fetch_sub(1, Ordering::SeqCst);
            let unavailable = |e| Error::new(ErrorKind::Unavailable, format!("cannot take a process slot: {e}"));
            return locked.map_err(unavailable);
        }
        crash_point!("claim.locked");
        shm.set_me(slot);
        proc_slot.pid_ns.store(self.pid_ns, Ordering::Release);
        proc_slot.pid.store(std::process::id(), Ordering::SeqCst);
        proc_slot.since_ns.store(sys::now_ns(), Ordering::Release);
        proc_slot.claimers.fetch_sub(1, Ordering::SeqCst);
        crash_point!("claim.named");
        // A new incarnation: lock words its dead predecessors left now name a dead owner.
        let incarnation = proc_slot.incarnation.fetch_add(1, Ordering::AcqRel).wrapping_add(1);
        shm.set_incarnation(incarnation);
        crash_point!("claim.incarnated");
        if incarnation > Owner::INCARNATIONS {
            // The incarnation wrapped around at least once: a lock word a predecessor left
            // 2^11 claims ago would pass for ours.
            self.disown_locks(slot, incarnation)?;
        }
        proc_slot.in_use.store(1, Ordering::Release);
        crash_point!("claim.marked");
        self.scrub(slot)?;
        Ok(true)
    }

    /// Makes every lock word that names `slot` with `incarnation` (left by a predecessor
    /// as many claims ago as wraps the incarnation around) name no owner: see
    /// `protocol::lock`.
    fn disown_locks(&self, slot: u32, incarnation: u32) -> Result<()> {
        let shm = &self.shm;
        let owner = Owner::new(slot, incarnation);
        let header = shm.header();
        disown(&header.grow_lock, owner);
        disown(&header.table_lock, owner);
        for index in 0..shm.records() {
            disown(&shm.record(index)?.lock, owner);
        }
        Ok(())
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
                // The record no longer has the name this entry was for, so nothing links it:
                // it cannot happen in a file that only latchkey wrote (a reclaim frees the
                // entries of the dead first). Dying here leaves it for the next owner.
                e.state.store(EntryKind::Free.bits(), Ordering::Release);
                continue;
            }
            let mut locked = match rec.lock() {
                Ok(locked) => locked,
                // Reclaimed since: a process that judged the slot dead before we took it
                // freed the entry, and then nobody used the name.
                Err(e) if e.kind() == ErrorKind::HandleLost && !shm.is_lost() => continue,
                Err(e) => return Err(e),
            };
            // Under the lock, again: a process that judged the slot dead before we took it
            // may have freed the entry meanwhile.
            let state = e.state.load(Ordering::Acquire);
            if EntryKind::of(state) != Some(kind) || e.record.load(Ordering::Acquire) != index {
                continue;
            }
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
    /// The grower first takes the liveness lock of the chunk's first slot, `seen`, and
    /// grows the file as that slot's owner (a lock word must name a live slot). Returns
    /// whether it holds that slot's liveness lock (then the caller takes the slot).
    fn grow_slots(&self, seen: u32) -> Result<bool> {
        let shm = &self.shm;
        let header = shm.header();
        // Count a chunk that a process that died published without counting.
        let counted = published(&header.slot_chunks, SLOT_BASE);
        header.slots.fetch_max(counted, Ordering::AcqRel);
        if header.slots.load(Ordering::Acquire) != seen {
            return Ok(false);
        }
        let byte = LIVENESS_OFFSET + u64::from(seen);
        let unavailable =
            |e: std::io::Error| Error::new(ErrorKind::Unavailable, format!("cannot take a process slot: {e}"));
        if !sys::lock::try_lock_byte(shm.file().as_fd(), byte).map_err(unavailable)? {
            std::thread::yield_now(); // another process grows the table
            return Ok(false);
        }
        let counted = published(&header.slot_chunks, SLOT_BASE);
        header.slots.fetch_max(counted, Ordering::AcqRel);
        if counted > seen {
            // Another process added the chunk since we looked, took the slot and died: we
            // hold the liveness lock of a dead process's slot, which the caller takes as
            // any other, with an incarnation of its own.
            return Ok(true);
        }
        shm.set_me(seen);
        // A process that died growing the table may have held the grow lock as `seen`:
        // a new incarnation makes that lock word name a dead owner.
        let incarnation = header.slot_grower.fetch_add(1, Ordering::AcqRel).wrapping_add(1);
        shm.set_incarnation(incarnation);
        let chunk = header.slot_chunks.iter().position(|at| at.load(Ordering::Acquire) == 0).ok_or_else(|| {
            Error::new(ErrorKind::Unavailable, "the namespace has as many process slots as its layout can name")
        })?;
        let items = chunk_items(chunk, SLOT_BASE);
        if seen + items > MAX_SLOTS {
            let why = format!("the namespace has {seen} process slots, the most a lock word can name");
            return Err(Error::new(ErrorKind::Unavailable, why));
        }
        let at = self.grow_pages(u64::from(items) * size_of::<ProcSlot>() as u64)?;
        // The slot's first process takes the incarnation after the grower's.
        shm.at::<ProcSlot>(at, "a process slot")?.incarnation.store(incarnation, Ordering::Release);
        // Another process may have grown it first (and lost this slot's lock race since):
        // our space is then lost, not reused.
        if header.slot_chunks[chunk].compare_exchange(0, at, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            crash_point!("claim.chunk_published");
        }
        header.slots.fetch_max(published(&header.slot_chunks, SLOT_BASE), Ordering::AcqRel);
        crash_point!("claim.chunk_counted");
        Ok(true)
    }
}
