//! Repair: freeing what dead processes held, waited for or had open, and rebuilding a
//! record whose lock's owner died in the middle of a change.

use latchkey_model::Result;

use super::list::{self, List};
use super::{Locked, Rec};
use crate::layout::{Entry, EntryKind, Key, ASYNC};
use crate::shm::{corrupted, Shm};
use crate::sync::atomic::Ordering;

/// Answers to "is the process in this slot alive?", asked once each during one hold of a
/// record lock (invariant 6: never kept longer).
pub(crate) struct Liveness<'a> {
    shm: &'a Shm,
    known: Vec<(u32, bool)>,
}

impl<'a> Liveness<'a> {
    pub(crate) fn new(shm: &'a Shm) -> Self {
        Liveness { shm, known: Vec::new() }
    }

    pub(crate) fn alive(&mut self, slot: u32) -> bool {
        if let Some(&(_, alive)) = self.known.iter().find(|(s, _)| *s == slot) {
            return alive;
        }
        let alive = self.shm.is_alive(slot);
        self.known.push((slot, alive));
        alive
    }
}

impl Locked<'_> {
    /// Frees what dead processes hold, wait for or have open in this record, and nudges
    /// the requests that concerns. Returns whether anything was freed.
    pub(crate) fn repair(&mut self) -> Result<bool> {
        let _op = crate::crash::op("repair");
        let (shm, r) = (self.rec.shm, self.rec.r);
        let mut live = Liveness::new(shm);
        let mut freed = false;
        for (at, e) in list::entries(shm, r, List::Holds)? {
            if !live.alive(e.owner.load(Ordering::Acquire)) {
                self.drop_hold(at, e)?;
                free(e);
                freed = true;
            }
        }
        for (at, e) in list::entries(shm, r, List::Queue)? {
            if !live.alive(e.owner.load(Ordering::Acquire)) {
                let next = e.next.load(Ordering::Acquire);
                list::unlink(shm, r, List::Queue, at, e)?;
                free(e);
                freed = true;
                // The request behind it depended on it.
                if next != 0 {
                    self.wakes.nudge(shm, shm.entry(next)?);
                }
            }
        }
        for (at, e) in list::entries(shm, r, List::Users)? {
            if !live.alive(e.owner.load(Ordering::Acquire)) {
                list::unlink(shm, r, List::Users, at, e)?;
                free(e);
                freed = true;
            }
        }
        if freed {
            self.nudge_grantable()?;
        }
        Ok(freed)
    }

    /// Whether any holder or queued request of the record belongs to a dead process: a
    /// look without changes (the caller then repairs).
    pub(crate) fn has_dead(&self) -> Result<bool> {
        let (shm, r) = (self.rec.shm, self.rec.r);
        let mut live = Liveness::new(shm);
        for list in [List::Holds, List::Queue] {
            if list::entries(shm, r, list)?.iter().any(|(_, e)| !live.alive(e.owner.load(Ordering::Acquire))) {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

fn free(e: &Entry) {
    e.state.store(EntryKind::Free.bits(), Ordering::Release);
    crash_point!("repair.freed");
}

/// Rebuilds a record whose lock was taken over from a dead owner (invariant 2): frees the
/// entries of dead processes, relinks the lists from the live processes' entries (the
/// queue in ticket order), recounts the free permits, raises the token and ticket
/// counters above every entry's, and wakes every queued request to look again.
pub(super) fn rebuild(rec: Rec<'_>) -> Result<()> {
    let _op = crate::crash::op("rebuild");
    let (shm, r) = (rec.shm, rec.r);
    let key = Key(r.key.load(Ordering::Acquire));
    if !key.is_ready() {
        return Ok(()); // a name being added or reclaimed: the table lock's repair sees to it
    }
    let mut live = Liveness::new(shm);
    let (mut holds, mut queue, mut users) = (Vec::new(), Vec::new(), Vec::new());
    for slot in 0..shm.slots() {
        for (at, e) in shm.arena_entries(slot)? {
            let state = e.state.load(Ordering::Acquire);
            let Some(kind) = EntryKind::of(state) else {
                return Err(corrupted(format_args!("entry {at} has an unknown state {state:#x}")));
            };
            if kind == EntryKind::Free
                || e.record.load(Ordering::Acquire) != rec.index
                || e.generation.load(Ordering::Acquire) != key.generation()
            {
                continue;
            }
            if !live.alive(slot) {
                free(e);
                continue;
            }
            match kind {
                EntryKind::Hold => holds.push((at, e)),
                EntryKind::Wait => queue.push((at, e)),
                EntryKind::Open => users.push((at, e)),
                EntryKind::Free => {}
            }
        }
    }
    queue.sort_by_key(|(_, e)| e.order.load(Ordering::Acquire));
    relink(&holds, &r.holds);
    relink(&users, &r.users);
    relink(&queue, &r.queue_head);
    r.queue_tail.store(queue.last().map_or(0, |(at, _)| *at), Ordering::Release);
    crash_point!("rebuild.linked");
    let held: u64 = holds.iter().map(|(_, e)| u64::from(e.permits.load(Ordering::Acquire))).sum();
    let capacity = r.capacity.load(Ordering::Acquire);
    r.available.store(u64::from(capacity).saturating_sub(held) as u32, Ordering::Release);
    crash_point!("rebuild.counted");
    let top = holds.iter().map(|(_, e)| e.order.load(Ordering::Acquire)).max().unwrap_or(0);
    r.last_token.fetch_max(top, Ordering::AcqRel);
    let ticket = queue.last().map_or(0, |(_, e)| e.order.load(Ordering::Acquire).saturating_add(1));
    r.next_ticket.fetch_max(ticket, Ordering::AcqRel);
    crash_point!("rebuild.counters");
    for (_, e) in &queue {
        super::bump_and_wake(&e.word);
        if e.state.load(Ordering::Acquire) & ASYNC != 0 {
            if let Ok(slot) = shm.slot(e.owner.load(Ordering::Acquire)) {
                super::bump_and_wake(&slot.doorbell);
            }
        }
    }
    Ok(())
}

/// Links `entries` in order into a list starting at `head`.
fn relink(entries: &[(u32, &Entry)], head: &crate::sync::atomic::AtomicU32) {
    for (i, (_, e)) in entries.iter().enumerate() {
        let prev = if i == 0 { 0 } else { entries[i - 1].0 };
        let next = entries.get(i + 1).map_or(0, |(at, _)| *at);
        e.prev.store(prev, Ordering::Release);
        e.next.store(next, Ordering::Release);
    }
    head.store(entries.first().map_or(0, |(at, _)| *at), Ordering::Release);
}
