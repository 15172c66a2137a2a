//! Repair after a crash, and the record lock (taken over from a dead holder).

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::grant_word;
use crate::layout::*;
use crate::record::{Rec, PENDING};
use crate::word_lock::{self, WordLock};

/// How often a process that cannot be watched for death (see `watch`) is checked, and
/// how long a record lock held by a process that may be dead is waited for.
pub(crate) const LIVENESS_PERIOD: Duration = Duration::from_millis(20);

impl Rec<'_> {
    /// Frees what dead processes hold or wait for, if any holder or waiter is dead.
    /// Returns whether one was.
    pub(crate) fn repair_if_dead(&self) -> bool {
        if !self.dead_participants() {
            return false;
        }
        let lock = self.lock();
        let woken = self.repair();
        drop(lock);
        self.wake(&woken);
        true
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
        let mut woken = Vec::new();
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
                // Published in the state word: finish the grant. Never published: undo it,
                // and put its waiter back in the queue.
                let outcome = held.then_some(i as u32);
                if held {
                    holder.owner.fetch_and(!PENDING, Ordering::AcqRel);
                } else {
                    holder.owner.store(0, Ordering::Release);
                }
                let pending = (0..WAITERS).find(|&w| {
                    grant_word::pending_holder(self.r.waiters[w].granted.load(Ordering::Relaxed)) == Some(i as u32)
                });
                if let Some(w) = pending {
                    if grant_word::publish(&self.r.waiters[w].granted, outcome) {
                        woken.push(w);
                    }
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
        // A grant whose holder slot was finished but which was never published: the granter
        // died in between. Publish it if the slot holds it for that waiter, else requeue.
        for (w, waiter) in self.r.waiters.iter().enumerate() {
            let owner = waiter.owner.load(Ordering::Acquire);
            let Some(h) = grant_word::pending_holder(waiter.granted.load(Ordering::Acquire)) else { continue };
            if owner == 0 || !alive(owner) {
                continue; // removed below
            }
            let holds =
                holder_mask(state) & (1 << h) != 0 && self.r.holders[h as usize].owner.load(Ordering::Acquire) == owner;
            if grant_word::publish(&waiter.granted, holds.then_some(h)) {
                woken.push(w);
            }
        }
        // A dead waiter's place goes, granted or not: a grant it never took is a hold of
        // its dead slot, freed with the holders above.
        let mut removed = Vec::new();
        for (w, waiter) in self.r.waiters.iter().enumerate() {
            let owner = waiter.owner.load(Ordering::Acquire);
            if owner != 0 && !alive(owner) {
                removed.push(waiter.ticket.load(Ordering::Relaxed));
                self.free_waiter(w);
            }
        }
        // The waiter behind each one removed watched it; now it must watch another.
        for ticket in removed {
            if let Some(next) = self.successor(ticket) {
                self.nudge(next, &mut woken);
            }
        }
        // Make QUEUED agree with the queue before granting.
        if self.head_waiter().is_some() {
            self.r.state.fetch_or(QUEUED, Ordering::AcqRel);
        }
        // While QUEUED blocks the fast paths, the free permits are the capacity less what
        // the holders hold: set them so, whatever step the dead process was at (a change of
        // capacity, for one, leaves QUEUED and no permits).
        let current = self.r.state.load(Ordering::Acquire);
        if current & QUEUED != 0 {
            let held: u64 = (0..HOLDERS)
                .filter(|&i| holder_mask(current) & (1 << i) != 0)
                .map(|i| u64::from(self.r.holders[i].permits.load(Ordering::Acquire)))
                .sum();
            let free = u64::from(self.r.capacity.load(Ordering::Acquire)).saturating_sub(held);
            self.r.state.store((current & !AVAILABLE) | free, Ordering::Release);
        }
        woken.extend(self.give_back(released, clearing));
        for (i, holder) in self.r.holders.iter().enumerate() {
            if clearing & holder_bit(i) != 0 {
                holder.owner.store(0, Ordering::Release);
            }
        }
        // Slots freed just now may be what the head of the queue was short of.
        if clearing != 0 && self.r.state.load(Ordering::Acquire) & QUEUED != 0 {
            woken.extend(self.give_back(0, 0));
        }
        woken
    }

    /// Takes the record lock, from a dead holder if need be (then repairing the record).
    pub(crate) fn lock(&self) -> WordLock<'_> {
        word_lock::lock(self.ns, &self.r.lock, || {
            // The holder died inside the lock: the record may be half changed.
            let woken = self.repair();
            self.wake(&woken);
        })
    }
}
