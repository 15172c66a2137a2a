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
use std::time::{Duration, Instant};

use latchkey_model::{describe_capacity, ErrorKind, Result};

use crate::layout::*;
use crate::namespace::Namespace;
use crate::sys;
use crate::table::name_of;

/// A holder slot assigned by a granter but not yet published.
pub(crate) const PENDING: u32 = 1 << 31;
/// How often a waiter checks that the holders it waits for are alive.
pub(crate) const LIVENESS_PERIOD: Duration = Duration::from_millis(20);

/// Spin iterations before a waiter sleeps (about 10–20 µs).
const SPINS: u32 = 4_000;

/// How long a request waits before it looks again for room in a full queue.
pub(crate) const QUEUE_FULL_PAUSE: Duration = Duration::from_millis(1);

/// What [`Rec::enqueue`] did.
pub(crate) enum Enqueued {
    /// Queued in this waiter slot.
    Waiting(usize),
    /// Nothing queued: the permits are free; take them on the fast path.
    Free,
    /// Nothing queued: every waiter slot is taken. (Requests that find the queue full
    /// retry after [`QUEUE_FULL_PAUSE`]; among themselves they are not FIFO.)
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
    pub index: usize,
    pub capacity: u32,
}

/// A process slot as stored in records: the slot + 1, so that 0 means nobody.
pub(crate) fn owner_of(slot: u32) -> u32 {
    slot + 1
}

impl<'a> Rec<'a> {
    /// The record opened with `capacity`: refused while it is in use with another
    /// capacity, changed when nobody uses it.
    pub(crate) fn open(ns: &'a Namespace, index: usize, name: &str, capacity: u32) -> Result<Rec<'a>> {
        let r = ns.record(index);
        let rec = Rec { ns, r, index, capacity };
        let current = r.capacity.load(Ordering::Acquire);
        if current == capacity {
            return Ok(rec);
        }
        let lock = rec.lock();
        // Unused (no live process has it open) and idle (every permit free, no holder, no
        // waiter): block the fast paths, then change the capacity.
        let in_use = (0..PROC_SLOTS as u32).any(|slot| {
            r.users[slot as usize / 64].load(Ordering::Acquire) & (1 << (slot % 64)) != 0 && ns.is_alive(slot)
        });
        let idle = u64::from(current);
        let changed = !in_use && r.state.compare_exchange(idle, QUEUED, Ordering::AcqRel, Ordering::Relaxed).is_ok();
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
                    return;
                }
                Err(actual) => state = actual,
            }
        }
    }

    fn release_queued(&self, holder: u32, permits: u32) {
        let lock = self.lock();
        let woken = self.give_back(permits, holder_bit(holder as usize));
        self.r.holders[holder as usize].owner.store(0, Ordering::Release);
        drop(lock);
        self.wake(&woken);
    }

    /// Under the record lock: adds `released` permits, clears the holder bits in
    /// `clearing`, and grants queued waiters from the oldest while their requests fit.
    /// Returns the granted waiters, to be woken once the lock is let go.
    fn give_back(&self, released: u32, clearing: u64) -> Vec<usize> {
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
            waiter.granted.store(PENDING | holder, Ordering::Release);
            granted.push((w, holder));
        }
        let queued = if self.head_waiter().is_some() { QUEUED } else { 0 };
        self.r.state.store(u64::from(free) | queued | (u64::from(mask) << HOLDER_SHIFT), Ordering::Release);
        let mut woken = Vec::with_capacity(granted.len());
        for (w, holder) in granted {
            let slot = &self.r.holders[holder as usize];
            slot.owner.fetch_and(!PENDING, Ordering::AcqRel);
            self.r.waiters[w].granted.store(holder + 1, Ordering::Release);
            woken.push(w);
        }
        woken
    }

    /// The queued waiter with the lowest ticket.
    fn head_waiter(&self) -> Option<usize> {
        (0..WAITERS)
            .filter(|&w| {
                let waiter = &self.r.waiters[w];
                waiter.owner.load(Ordering::Relaxed) != 0 && waiter.granted.load(Ordering::Relaxed) == 0
            })
            .min_by_key(|&w| self.r.waiters[w].ticket.load(Ordering::Relaxed))
    }

    fn wake(&self, woken: &[usize]) {
        for &w in woken {
            sys::wake(&self.r.waiters[w].granted, u32::MAX);
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
                Enqueued::Waiting(w) => return self.wait_for_grant(w, deadline, cancelled),
                Enqueued::Free => {}
                Enqueued::Full => {
                    if cancelled() || deadline.is_some_and(|d| Instant::now() >= d) {
                        return Ok(None);
                    }
                    // The queue may be full of the dead: free their places.
                    self.repair_if_dead();
                    std::thread::sleep(QUEUE_FULL_PAUSE);
                }
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
        let me = owner_of(self.ns.slot());
        let w = (0..WAITERS)
            .find(|&w| self.r.waiters[w].owner.compare_exchange(0, me, Ordering::AcqRel, Ordering::Relaxed).is_ok())?;
        let waiter = &self.r.waiters[w];
        waiter.permits.store(permits, Ordering::Relaxed);
        waiter.granted.store(0, Ordering::Relaxed);
        waiter.ticket.store(self.r.next_ticket.fetch_add(1, Ordering::Relaxed), Ordering::Relaxed);
        Some(w)
    }

    /// Whether a waiter slot is free.
    pub(crate) fn has_free_waiter_slot(&self) -> bool {
        self.r.waiters.iter().any(|w| w.owner.load(Ordering::Acquire) == 0)
    }

    pub(crate) fn wait_for_grant(
        &self,
        w: usize,
        deadline: Option<Instant>,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<Option<Grant>> {
        let waiter = &self.r.waiters[w];
        let mut next_check = Instant::now() + LIVENESS_PERIOD;
        loop {
            if let Some(grant) = self.take_grant(w) {
                return Ok(Some(grant));
            }
            let now = Instant::now();
            if cancelled() || deadline.is_some_and(|d| now >= d) {
                return Ok(self.withdraw(w));
            }
            if now >= next_check {
                self.repair_if_dead();
                next_check = now + LIVENESS_PERIOD;
            }
            let until = deadline.map_or(next_check, |d| d.min(next_check));
            if self.spin_for_grant(w) {
                continue;
            }
            let granted = waiter.granted.load(Ordering::Acquire);
            if granted == 0 || granted & PENDING != 0 {
                sys::wait(&waiter.granted, granted, until.saturating_duration_since(Instant::now()));
            }
        }
    }

    /// The grant of waiter `w`, once published; frees the waiter slot.
    pub(crate) fn take_grant(&self, w: usize) -> Option<Grant> {
        let waiter = &self.r.waiters[w];
        let granted = waiter.granted.load(Ordering::Acquire);
        if granted == 0 || granted & PENDING != 0 {
            return None;
        }
        let holder = granted - 1;
        let token = self.r.holders[holder as usize].token.load(Ordering::Acquire);
        waiter.owner.store(0, Ordering::Release);
        Some(Grant { holder, token })
    }

    /// Takes waiter `w` off the queue after a timeout or a cancel. A grant that came
    /// meanwhile is given back at once.
    pub(crate) fn withdraw(&self, w: usize) -> Option<Grant> {
        let lock = self.lock();
        let woken = match self.take_grant(w) {
            Some(grant) => {
                let permits = self.r.holders[grant.holder as usize].permits.load(Ordering::Relaxed);
                let woken = self.give_back(permits, holder_bit(grant.holder as usize));
                self.r.holders[grant.holder as usize].owner.store(0, Ordering::Release);
                woken
            }
            None => {
                self.r.waiters[w].owner.store(0, Ordering::Release);
                // The withdrawn waiter may have been the head holding back others.
                self.give_back(0, 0)
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
        let woken = self.give_back(permits, holder_bit(grant.holder as usize));
        self.r.holders[grant.holder as usize].owner.store(0, Ordering::Release);
        drop(lock);
        self.wake(&woken);
        Some(w)
    }

    /// The blocking form of a cede: [`cede_enqueue`](Self::cede_enqueue), then the wait.
    pub(crate) fn cede_blocking(&self, grant: Grant, permits: u32) -> Result<Grant> {
        match self.cede_enqueue(grant, permits) {
            None => Ok(grant),
            Some(w) => Ok(self.wait_for_grant(w, None, &|| false)?.expect("a wait without deadline ends in a grant")),
        }
    }

    /// Watches waiter `w`'s word for a short while before sleeping: a holder running on
    /// another core often releases within microseconds, and a grant seen while spinning
    /// saves the futex wake-up and the context switch. Returns whether it was granted.
    pub(crate) fn spin_for_grant(&self, w: usize) -> bool {
        for _ in 0..SPINS {
            if self.is_granted(w) {
                return true;
            }
            std::hint::spin_loop();
        }
        false
    }

    /// Whether waiter `w`'s grant has been published (without taking it).
    pub(crate) fn is_granted(&self, w: usize) -> bool {
        let granted = self.r.waiters[w].granted.load(Ordering::Acquire);
        granted != 0 && granted & PENDING == 0
    }

    /// Sleeps until waiter `w` may have been granted, at most `timeout`.
    pub(crate) fn sleep_on(&self, w: usize, timeout: Duration) {
        let word = &self.r.waiters[w].granted;
        let seen = word.load(Ordering::Acquire);
        if seen == 0 || seen & PENDING != 0 {
            sys::wait(word, seen, timeout);
        }
    }

    /// Wakes whoever sleeps on waiter `w`'s word.
    pub(crate) fn wake_waiter(&self, w: usize) {
        sys::wake(&self.r.waiters[w].granted, u32::MAX);
    }

    /// Frees what dead processes hold or wait for, if any holder or waiter is dead.
    pub(crate) fn repair_if_dead(&self) {
        if self.dead_participants() {
            let lock = self.lock();
            let woken = self.repair();
            drop(lock);
            self.wake(&woken);
        }
    }

    fn dead_participants(&self) -> bool {
        let dead = |owner: u32| owner & !PENDING != 0 && !self.ns.is_alive((owner & !PENDING) - 1);
        self.r.holders.iter().any(|h| dead(h.owner.load(Ordering::Relaxed)))
            || self.r.waiters.iter().any(|w| dead(w.owner.load(Ordering::Relaxed)))
    }

    /// Under the record lock: completes or undoes a grant a dead lock holder left half
    /// done, frees the holds and queue places of dead processes, and grants what that
    /// frees. Returns the granted waiters.
    fn repair(&self) -> Vec<usize> {
        let state = self.r.state.load(Ordering::Acquire);
        let alive = |owner: u32| self.ns.is_alive((owner & !PENDING) - 1);
        let mut released = 0;
        let mut clearing = 0u64;
        for (i, holder) in self.r.holders.iter().enumerate() {
            let owner = holder.owner.load(Ordering::Acquire);
            if owner == 0 {
                continue;
            }
            let held = holder_mask(state) & (1 << i) != 0;
            if owner & PENDING != 0 {
                if held {
                    // Published in the state word: finish the grant.
                    holder.owner.fetch_and(!PENDING, Ordering::AcqRel);
                    if let Some(waiter) =
                        self.r.waiters.iter().find(|w| w.granted.load(Ordering::Relaxed) == PENDING | i as u32)
                    {
                        waiter.granted.store(i as u32 + 1, Ordering::Release);
                    }
                } else {
                    // Never published: undo it, and put its waiter back in the queue.
                    if let Some(waiter) =
                        self.r.waiters.iter().find(|w| w.granted.load(Ordering::Relaxed) == PENDING | i as u32)
                    {
                        waiter.granted.store(0, Ordering::Release);
                    }
                    holder.owner.store(0, Ordering::Release);
                }
                continue;
            }
            if !alive(owner) {
                if held {
                    released += holder.permits.load(Ordering::Relaxed);
                    clearing |= holder_bit(i);
                } else {
                    holder.owner.store(0, Ordering::Release); // an acquire that died in flight
                }
            }
        }
        // A dead waiter's place goes, granted or not: a grant it never took is a hold of
        // its dead slot, freed with the holders above.
        for waiter in &self.r.waiters {
            let owner = waiter.owner.load(Ordering::Acquire);
            if owner != 0 && !alive(owner) {
                waiter.owner.store(0, Ordering::Release);
            }
        }
        // Make QUEUED agree with the queue before granting.
        if self.head_waiter().is_some() {
            self.r.state.fetch_or(QUEUED, Ordering::AcqRel);
        }
        let woken = self.give_back(released, clearing);
        for (i, holder) in self.r.holders.iter().enumerate() {
            if clearing & holder_bit(i) != 0 {
                holder.owner.store(0, Ordering::Release);
            }
        }
        woken
    }

    /// Takes the record lock, from a dead holder if need be (then repairing the record).
    fn lock(&self) -> RecordLock<'_> {
        let me = owner_of(self.ns.slot());
        let word = &self.r.lock;
        if word.compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed).is_ok() {
            return RecordLock { word };
        }
        let mut waited = false;
        loop {
            let current = word.load(Ordering::Relaxed);
            if current == 0 {
                if word.compare_exchange(0, me | LOCK_CONTENDED, Ordering::Acquire, Ordering::Relaxed).is_ok() {
                    return RecordLock { word };
                }
                continue;
            }
            let owner = current & !LOCK_CONTENDED;
            if waited && !self.ns.is_alive(owner - 1) {
                if word.compare_exchange(current, me | LOCK_CONTENDED, Ordering::Acquire, Ordering::Relaxed).is_ok() {
                    // The holder died inside the lock: the record may be half changed.
                    let woken = self.repair();
                    self.wake(&woken);
                    return RecordLock { word };
                }
                continue;
            }
            if current & LOCK_CONTENDED == 0
                && word
                    .compare_exchange(current, current | LOCK_CONTENDED, Ordering::Relaxed, Ordering::Relaxed)
                    .is_err()
            {
                continue;
            }
            sys::wait(word, current | LOCK_CONTENDED, LIVENESS_PERIOD);
            waited = true;
        }
    }
}

/// The held record lock; released on drop.
pub(crate) struct RecordLock<'a> {
    word: &'a std::sync::atomic::AtomicU32,
}

impl Drop for RecordLock<'_> {
    fn drop(&mut self) {
        if self.word.swap(0, Ordering::Release) & LOCK_CONTENDED != 0 {
            sys::wake(self.word, 1);
        }
    }
}
