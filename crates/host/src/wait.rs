//! Waiting for a grant: the one sleep loop of blocking and async waits, and what a
//! sleeping waiter watches so that it never needs to wake on a timer.
//!
//! A queued waiter depends on the waiter just ahead of it, or, at the head of the queue,
//! on the holders: if one of them dies, it must repair the record, or nobody may. It
//! sleeps on its `granted` word (see `grant_word`) and is nudged when what it depends on
//! changes: by the watcher thread (`watch`) when one of those processes dies, by a grant
//! when it becomes the head or the holders change, by a withdrawal or repair when the
//! waiter ahead of it leaves.
//!
//! The async forms, which wait without blocking the caller's thread, are in `async_wait`.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::grant_word;
use crate::record::{Rec, PENDING};
use crate::repair::LIVENESS_PERIOD;
use crate::sys;
use crate::watch::{Coverage, Watch};

/// Spin iterations before a waiter first sleeps (about 10–20 µs).
const SPINS: u32 = 4_000;

impl Rec<'_> {
    /// Sleeps until waiter `w` is granted (`true`), or until `deadline` or `give_up()`
    /// (`false`). The grant is left for [`take_grant`](Rec::take_grant).
    pub(crate) fn await_grant(&self, w: usize, deadline: Option<Instant>, give_up: &dyn Fn() -> bool) -> bool {
        let word = &self.r.waiters[w].granted;
        if self.spin_for_grant(w) {
            return true;
        }
        let mut watch = Watch::new(self.ns, word, grant_word::nudge_and_wake);
        loop {
            // Read before looking at the queue: a change after it shows in the word.
            let seen = word.load(Ordering::Acquire);
            if grant_word::granted_holder(seen).is_some() {
                return true;
            }
            let now = Instant::now();
            if give_up() || deadline.is_some_and(|d| now >= d) {
                return false;
            }
            let check_after = match watch.cover(&self.dependencies(w)) {
                Coverage::Dead => {
                    self.repair_if_dead();
                    continue;
                }
                Coverage::Complete => None,
                Coverage::Partial => Some(LIVENESS_PERIOD),
            };
            let until_deadline = deadline.map(|d| d.saturating_duration_since(now));
            if let Some(sleeping) = grant_word::mark_sleeping(word, seen) {
                // Asked again once marked: a waiter given up meanwhile may have had its
                // slot reused, its word back at `seen` (a give-up comes before its nudge).
                if give_up() {
                    return false;
                }
                sys::wait(word, sleeping, shortest(check_after, until_deadline));
            }
        }
    }

    /// Sleeps until the queue has a free waiter slot (`true`), or until `deadline` or
    /// `give_up()` (`false`). Such requests are not FIFO among themselves: each freed slot
    /// wakes one of them (see [`announce_room`](Rec::announce_room)). They depend on every
    /// queued waiter: if all of those died, nobody else would free their places.
    pub(crate) fn await_room(&self, deadline: Option<Instant>, give_up: &dyn Fn() -> bool) -> bool {
        let (word, sleepers) = (&self.r.room, &self.r.room_sleepers);
        let mut watch = Watch::new(self.ns, word, wake_everyone_for_room);
        loop {
            // Counted before looking, so a slot freed after the look wakes somebody.
            sleepers.fetch_add(1, Ordering::SeqCst);
            let seen = word.load(Ordering::SeqCst);
            let now = Instant::now();
            let done = if self.has_free_waiter_slot() {
                Some(true)
            } else if give_up() || deadline.is_some_and(|d| now >= d) {
                Some(false)
            } else {
                None
            };
            let check_after = match done {
                Some(_) => None,
                None => match watch.cover(&self.waiting_processes()) {
                    Coverage::Dead => {
                        sleepers.fetch_sub(1, Ordering::SeqCst);
                        self.repair_if_dead();
                        continue;
                    }
                    Coverage::Complete => None,
                    Coverage::Partial => Some(LIVENESS_PERIOD),
                },
            };
            if done.is_none() {
                sys::wait(word, seen, shortest(check_after, deadline.map(|d| d.saturating_duration_since(now))));
            }
            sleepers.fetch_sub(1, Ordering::SeqCst);
            if let Some(done) = done {
                return done;
            }
        }
    }

    /// Wakes one request waiting for room, if any: called once a waiter slot is free.
    pub(crate) fn announce_room(&self) {
        self.r.room.fetch_add(1, Ordering::SeqCst);
        if self.r.room_sleepers.load(Ordering::SeqCst) > 0 {
            sys::wake(&self.r.room, 1);
        }
    }

    /// The processes (slots) with a request in the queue, granted or not.
    fn waiting_processes(&self) -> Vec<u32> {
        slots_of(self.r.waiters.iter().map(|w| w.owner.load(Ordering::Acquire)))
    }

    /// The processes (slots) queued waiter `w` depends on: the waiter just ahead of it,
    /// or, at the head, the holders.
    pub(crate) fn dependencies(&self, w: usize) -> Vec<u32> {
        let ticket = |w: usize| self.r.waiters[w].ticket.load(Ordering::Relaxed);
        let mine = ticket(w);
        let ahead = self.queued().filter(|&x| ticket(x) < mine).max_by_key(|&x| ticket(x));
        match ahead {
            Some(x) => slots_of([self.r.waiters[x].owner.load(Ordering::Acquire)].into_iter()),
            None => slots_of(self.r.holders.iter().map(|h| h.owner.load(Ordering::Acquire) & !PENDING)),
        }
    }

    /// Watches waiter `w`'s word for a short while before sleeping: a holder running on
    /// another core often releases within microseconds, and a grant seen while spinning
    /// saves the futex wake-up and the context switch. Returns whether it was granted.
    fn spin_for_grant(&self, w: usize) -> bool {
        let word = &self.r.waiters[w].granted;
        for _ in 0..SPINS {
            if grant_word::granted_holder(word.load(Ordering::Acquire)).is_some() {
                return true;
            }
            std::hint::spin_loop();
        }
        false
    }
}

/// The process slots of `owners` (slot + 1, 0 for nobody), each once.
fn slots_of(owners: impl Iterator<Item = u32>) -> Vec<u32> {
    let mut slots: Vec<u32> = owners.filter(|&owner| owner != 0).map(|owner| owner - 1).collect();
    slots.sort_unstable();
    slots.dedup();
    slots
}

/// Wakes every request waiting for room on a record's `room` word, to look again.
pub(crate) fn wake_everyone_for_room(room: &AtomicU32) {
    room.fetch_add(1, Ordering::SeqCst);
    sys::wake_all(room);
}

pub(crate) fn shortest(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
