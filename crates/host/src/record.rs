//! One name's fair, weighted semaphore in shared memory: fast paths, the record lock,
//! FIFO grants, and repair after a crash. (Finding a name's record is `table`.)
//!
//! Invariants, kept by every process:
//! - A holder slot is claimed (`owner` set) before the compare-and-swap that sets its bit
//!   in the state word, and freed after the one that clears it. So the bit says whether
//!   the permits are held; an owner without its bit is an acquire in flight, or dead.
//! - While `QUEUED` is set, only the holder of the record lock changes the state word.
//! - A grant from the queue marks its holder slot `PENDING` until it has been published
//!   (state word, then the waiter's `granted` word), so that repair can finish or undo it.

use std::sync::atomic::Ordering;
use std::time::Instant;

use latchkey_model::{describe_capacity, ErrorKind, Result};

use crate::grant_word;
use crate::layout::*;
use crate::namespace::Namespace;
use crate::sys;
use crate::table::{name_of, Found};

/// A holder slot assigned by a granter but not yet published.
pub(crate) const PENDING: u32 = 1 << 31;

/// What [`Rec::enqueue`] did.
pub(crate) enum Enqueued {
    /// Queued in this waiter slot.
    Waiting(usize),
    /// Nothing queued: the permits are free; take them on the fast path.
    Free,
    /// Nothing queued: every waiter slot is taken. (Requests that find the queue full
    /// wait for room, and are not FIFO among themselves.)
    Full,
}

/// A grant: the holder slot and the fencing token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Grant {
    pub holder: u32,
    pub token: u64,
}

/// One name of a namespace.
#[derive(Clone, Copy)]
pub(crate) struct Rec<'a> {
    pub ns: &'a Namespace,
    pub r: &'a Record,
    pub capacity: u32,
}

/// A process slot as stored in records: the slot + 1, so that 0 means nobody.
pub(crate) fn owner_of(slot: u32) -> u32 {
    slot + 1
}

impl<'a> Rec<'a> {
    /// The record opened with `capacity`: refused while it is in use with another
    /// capacity, changed when nobody uses it.
    pub(crate) fn open(ns: &'a Namespace, found: Found, name: &str, capacity: u32) -> Result<Rec<'a>> {
        let index = found.index;
        let r = ns.record(index);
        let rec = Rec { ns, r, capacity };
        let current = r.capacity.load(Ordering::Acquire);
        if current == capacity {
            return Ok(rec);
        }
        let lock = rec.lock();
        // Unused (no live process has it open) and idle (every permit free, no holder, no
        // waiter): block the fast paths, then change the capacity.
        let in_use = ns.has_live_user(index);
        let idle = u64::from(current);
        // (Not if the name was reclaimed meanwhile: the caller looks it up again.)
        let changed = !in_use
            && ns.still_holds(found)
            && r.state.compare_exchange(idle, QUEUED, Ordering::AcqRel, Ordering::Relaxed).is_ok();
        if changed {
            r.capacity.store(capacity, Ordering::Release);
            r.state.store(u64::from(capacity), Ordering::Release);
        }
        drop(lock);
        if changed {
            Ok(rec)
        } else {
            Err(ns.error(
                ErrorKind::CapacityMismatch,
                format!(
                    "the name is in use as {}, and was asked for as {}",
                    describe_capacity(current),
                    describe_capacity(capacity)
                ),
                name,
            ))
        }
    }

    /// Whether nobody holds, waits for or locks the record.
    pub(crate) fn is_idle(&self) -> bool {
        let capacity = self.r.capacity.load(Ordering::Acquire);
        self.r.state.load(Ordering::Acquire) == u64::from(capacity)
            && self.r.lock.load(Ordering::Acquire) == 0
            && self.r.holders.iter().all(|h| h.owner.load(Ordering::Acquire) == 0)
            && self.r.waiters.iter().all(|w| w.owner.load(Ordering::Acquire) == 0)
    }

    /// Takes `permits` if they are free, nobody waits, and a holder slot is free.
    pub(crate) fn try_acquire(&self, permits: u32) -> Result<Option<Grant>> {
        let me = owner_of(self.ns.slot());
        let mut state = self.r.state.load(Ordering::Acquire);
        loop {
            self.check_capacity()?;
            if state & QUEUED != 0 || available(state) < permits {
                return Ok(None);
            }
            let Some(holder) = self.claim_holder(holder_mask(state), me) else {
                return Ok(None);
            };
            let slot = &self.r.holders[holder as usize];
            slot.permits.store(permits, Ordering::Relaxed);
            slot.since_ns.store(sys::now_ns(), Ordering::Relaxed);
            let taken = (state - u64::from(permits)) | holder_bit(holder as usize);
            match self.r.state.compare_exchange(state, taken, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    let token = self.r.last_token.fetch_add(1, Ordering::AcqRel) + 1;
                    slot.token.store(token, Ordering::Release);
                    return Ok(Some(Grant { holder, token }));
                }
                Err(actual) => {
                    slot.owner.store(0, Ordering::Release);
                    self.regrant_if_slot_was_missed();
                    state = actual;
                }
            }
        }
    }

    /// Claims a holder slot whose bit is clear in `mask`.
    fn claim_holder(&self, mask: u32, owner: u32) -> Option<u32> {
        let mut free = !mask;
        while free != 0 {
            let index = free.trailing_zeros();
            free &= free - 1;
            let slot = &self.r.holders[index as usize];
            if slot.owner.compare_exchange(0, owner, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
                return Some(index);
            }
        }
        None
    }

    fn check_capacity(&self) -> Result<()> {
        let current = self.r.capacity.load(Ordering::Acquire);
        if current == self.capacity {
            return Ok(());
        }
        Err(self.ns.error(
            ErrorKind::CapacityMismatch,
            format!(
                "the name became {} while open as {}",
                describe_capacity(current),
                describe_capacity(self.capacity)
            ),
            &name_of(self.r),
        ))
    }

    /// Gives back the permits of `holder`, granting waiters in FIFO order.
    pub(crate) fn release(&self, holder: u32, permits: u32) {
        let mut state = self.r.state.load(Ordering::Acquire);
        loop {
            if state & QUEUED != 0 {
                return self.release_queued(holder, permits);
            }
            let freed = (state + u64::from(permits)) & !holder_bit(holder as usize);
            match self.r.state.compare_exchange(state, freed, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    self.r.holders[holder as usize].owner.store(0, Ordering::Release);
                    self.regrant_if_slot_was_missed();
                    return;
                }
                Err(actual) => state = actual,
            }
        }
    }

    fn release_queued(&self, holder: u32, permits: u32) {
        let lock = self.lock();
        let woken = self.free_holder(holder, permits);
        drop(lock);
        self.wake(&woken);
    }

    /// Under the record lock: gives back the permits of `holder` and frees its slot.
    /// Returns the waiters to wake.
    fn free_holder(&self, holder: u32, permits: u32) -> Vec<usize> {
        let mut woken = self.give_back(permits, holder_bit(holder as usize));
        self.r.holders[holder as usize].owner.store(0, Ordering::Release);
        // The grants above could not use this slot, still owned then: with every other
        // holder slot taken, only now can the head of the queue be granted.
        if self.r.state.load(Ordering::Acquire) & QUEUED != 0 {
            woken.extend(self.give_back(0, 0));
        }
        woken
    }

    /// After a holder slot was let go outside the record lock: if waiters are queued and
    /// the slots had run out, a grant may have failed for want of this very slot.
    fn regrant_if_slot_was_missed(&self) {
        let state = self.r.state.load(Ordering::Acquire);
        if state & QUEUED != 0 && holder_mask(state).count_ones() as usize >= HOLDERS - 1 {
            let lock = self.lock();
            let woken = self.give_back(0, 0);
            drop(lock);
            self.wake(&woken);
        }
    }

    /// Under the record lock: adds `released` permits, clears the holder bits in
    /// `clearing`, and grants queued waiters from the oldest while their requests fit.
    /// Returns the granted waiters, to be woken once the lock is let go.
    pub(crate) fn give_back(&self, released: u32, clearing: u64) -> Vec<usize> {
        let state = self.r.state.load(Ordering::Acquire);
        if state & QUEUED == 0 {
            // Nobody waits, and the fast paths may be changing the word too.
            self.r
                .state
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| Some((s + u64::from(released)) & !clearing))
                .ok();
            return Vec::new();
        }
        let mut free = available(state) + released;
        let mut mask = holder_mask(state) & !((clearing >> HOLDER_SHIFT) as u32);
        let mut granted = Vec::new();
        while let Some(w) = self.head_waiter() {
            let waiter = &self.r.waiters[w];
            let permits = waiter.permits.load(Ordering::Relaxed);
            if free < permits {
                break;
            }
            let owner = waiter.owner.load(Ordering::Relaxed);
            let Some(holder) = self.claim_holder(mask, owner | PENDING) else { break };
            let slot = &self.r.holders[holder as usize];
            slot.permits.store(permits, Ordering::Relaxed);
            slot.since_ns.store(sys::now_ns(), Ordering::Relaxed);
            slot.token.store(self.r.last_token.fetch_add(1, Ordering::AcqRel) + 1, Ordering::Release);
            free -= permits;
            mask |= 1 << holder;
            // Taken off the queue now; published below.
            grant_word::assign(&waiter.granted, holder);
            granted.push((w, holder));
        }
        let head = self.head_waiter();
        let queued = if head.is_some() { QUEUED } else { 0 };
        self.r.state.store(u64::from(free) | queued | (u64::from(mask) << HOLDER_SHIFT), Ordering::Release);
        let mut woken = Vec::new();
        for &(w, holder) in &granted {
            let slot = &self.r.holders[holder as usize];
            slot.owner.fetch_and(!PENDING, Ordering::AcqRel);
            if grant_word::publish(&self.r.waiters[w].granted, Some(holder)) {
                woken.push(w);
            }
        }
        // New holders: the new head of the queue must watch them (see `wait`).
        if let Some(head) = head.filter(|_| !granted.is_empty()) {
            self.nudge(head, &mut woken);
        }
        woken
    }

    /// Nudges waiter `w` to look again, adding it to `woken` if it sleeps.
    pub(crate) fn nudge(&self, w: usize, woken: &mut Vec<usize>) {
        if grant_word::nudge(&self.r.waiters[w].granted) {
            woken.push(w);
        }
    }

    /// The queued waiter that comes next after `ticket`.
    pub(crate) fn successor(&self, ticket: u64) -> Option<usize> {
        self.queued()
            .filter(|&w| self.r.waiters[w].ticket.load(Ordering::Relaxed) > ticket)
            .min_by_key(|&w| self.r.waiters[w].ticket.load(Ordering::Relaxed))
    }

    /// The waiters in the queue, in no order.
    pub(crate) fn queued(&self) -> impl Iterator<Item = usize> + '_ {
        (0..WAITERS).filter(|&w| {
            let waiter = &self.r.waiters[w];
            waiter.owner.load(Ordering::Acquire) != 0 && grant_word::is_queued(waiter.granted.load(Ordering::Relaxed))
        })
    }

    /// The queued waiter with the lowest ticket.
    pub(crate) fn head_waiter(&self) -> Option<usize> {
        self.queued().min_by_key(|&w| self.r.waiters[w].ticket.load(Ordering::Relaxed))
    }

    /// Wakes the sleeping waiters of `woken`, once the record lock is let go.
    pub(crate) fn wake(&self, woken: &[usize]) {
        for &w in woken {
            grant_word::wake(&self.r.waiters[w].granted);
        }
    }

    /// Blocks in FIFO order for `permits`, until `deadline` if one is given (`Ok(None)`
    /// after it), or until `cancelled` returns true.
    pub(crate) fn acquire_blocking(
        &self,
        permits: u32,
        deadline: Option<Instant>,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<Option<Grant>> {
        loop {
            if let Some(grant) = self.try_acquire(permits)? {
                return Ok(Some(grant));
            }
            match self.enqueue(permits)? {
                Enqueued::Waiting(w) if self.await_grant(w, deadline, cancelled) => return Ok(self.take_grant(w)),
                Enqueued::Waiting(w) => return Ok(self.withdraw(w)),
                Enqueued::Free => {}
                Enqueued::Full if self.await_room(deadline, cancelled) => {}
                Enqueued::Full => return Ok(None),
            }
        }
    }

    /// Queues a request for `permits`.
    pub(crate) fn enqueue(&self, permits: u32) -> Result<Enqueued> {
        let lock = self.lock();
        self.check_capacity()?;
        let state = self.r.state.load(Ordering::Acquire);
        if state & QUEUED == 0 && available(state) >= permits && holder_mask(state) != u32::MAX {
            return Ok(Enqueued::Free);
        }
        let Some(w) = self.queue_waiter(permits) else {
            return Ok(Enqueued::Full);
        };
        self.r.state.fetch_or(QUEUED, Ordering::AcqRel);
        let woken = self.give_back(0, 0);
        drop(lock);
        self.wake(&woken);
        Ok(Enqueued::Waiting(w))
    }

    /// Under the record lock: takes a free waiter slot for a request of `permits`, at the
    /// back of the queue; `None` if every slot is taken.
    fn queue_waiter(&self, permits: u32) -> Option<usize> {
        // Only the record lock's holder takes waiter slots. The slot is filled in before
        // its owner is set, so that nobody takes it for queued with a stale ticket.
        let w = (0..WAITERS).find(|&w| self.r.waiters[w].owner.load(Ordering::Acquire) == 0)?;
        let waiter = &self.r.waiters[w];
        waiter.permits.store(permits, Ordering::Relaxed);
        waiter.granted.store(0, Ordering::Relaxed);
        waiter.ticket.store(self.r.next_ticket.fetch_add(1, Ordering::Relaxed), Ordering::Relaxed);
        waiter.owner.store(owner_of(self.ns.slot()), Ordering::Release);
        Some(w)
    }

    /// Frees waiter slot `w`, and wakes one request that waits for room in the queue.
    pub(crate) fn free_waiter(&self, w: usize) {
        self.r.waiters[w].owner.store(0, Ordering::SeqCst);
        self.announce_room();
    }

    /// Whether a waiter slot is free.
    pub(crate) fn has_free_waiter_slot(&self) -> bool {
        self.r.waiters.iter().any(|w| w.owner.load(Ordering::Acquire) == 0)
    }
    /// The grant of waiter `w`, once published; frees the waiter slot.
    pub(crate) fn take_grant(&self, w: usize) -> Option<Grant> {
        let waiter = &self.r.waiters[w];
        let holder = grant_word::granted_holder(waiter.granted.load(Ordering::Acquire))?;
        let token = self.r.holders[holder as usize].token.load(Ordering::Acquire);
        self.free_waiter(w);
        Some(Grant { holder, token })
    }

    /// Takes waiter `w` off the queue after a timeout or a cancel. A grant that came
    /// meanwhile is given back at once.
    pub(crate) fn withdraw(&self, w: usize) -> Option<Grant> {
        let lock = self.lock();
        let woken = match self.take_grant(w) {
            Some(grant) => {
                let permits = self.r.holders[grant.holder as usize].permits.load(Ordering::Relaxed);
                self.free_holder(grant.holder, permits)
            }
            None => {
                let ticket = self.r.waiters[w].ticket.load(Ordering::Relaxed);
                self.free_waiter(w);
                // The withdrawn waiter may have been the head holding back others.
                let mut woken = self.give_back(0, 0);
                // The one behind watched it; now it must watch whoever is ahead of it.
                if let Some(next) = self.successor(ticket) {
                    self.nudge(next, &mut woken);
                }
                woken
            }
        };
        drop(lock);
        self.wake(&woken);
        None
    }

    /// If anyone waits, hands the permits of `grant` to the queue and queues again at the
    /// back, returning the waiter slot; `None` if nobody waits (or the queue is full), and
    /// the caller keeps `grant`.
    pub(crate) fn cede_enqueue(&self, grant: Grant, permits: u32) -> Option<usize> {
        let lock = self.lock();
        self.head_waiter()?;
        let w = self.queue_waiter(permits)?;
        let woken = self.free_holder(grant.holder, permits);
        drop(lock);
        self.wake(&woken);
        Some(w)
    }

    /// The blocking form of a cede: [`cede_enqueue`](Self::cede_enqueue), then the wait.
    pub(crate) fn cede_blocking(&self, grant: Grant, permits: u32) -> Result<Grant> {
        match self.cede_enqueue(grant, permits) {
            None => Ok(grant),
            Some(w) => {
                let granted = self.await_grant(w, None, &|| false);
                debug_assert!(granted, "a wait without a deadline ends in a grant");
                Ok(self.take_grant(w).expect("granted"))
            }
        }
    }
}
