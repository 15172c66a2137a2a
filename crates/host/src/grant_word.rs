//! A queued waiter's `granted` word: how a grant reaches the waiter, and how the waiter
//! is woken to look again (a "nudge") without any lost wake-up.
//!
//! | bits   | meaning                                                               |
//! |--------|-----------------------------------------------------------------------|
//! | 0..8   | the granted holder slot + 1; 0 while queued                           |
//! | 8..30  | nudge count: bumped so that a sleeping waiter wakes and looks again   |
//! | 30     | `SLEEPING`: the waiter sleeps (or is about to) on this word            |
//! | 31     | `PENDING`: assigned a holder slot, not yet published                  |
//!
//! A waiter sleeps only while the word holds the exact value it saw, and every event it
//! must notice (a grant, a nudge) changes the word, so no wake-up is lost. A futex wake,
//! a system call, is made only when `SLEEPING` was set.

use std::sync::atomic::{AtomicU32, Ordering};

use crate::sys;

const HOLDER: u32 = 0xff;
const NUDGE: u32 = 1 << 8;
const NUDGES: u32 = ((1 << 30) - 1) & !HOLDER;
const SLEEPING: u32 = 1 << 30;
const PENDING: u32 = 1 << 31;

/// The granted holder slot, if the grant is published.
pub(crate) fn granted_holder(word: u32) -> Option<u32> {
    (word & HOLDER != 0 && word & PENDING == 0).then(|| (word & HOLDER) - 1)
}

/// Whether the waiter is still in the queue (no holder slot assigned).
pub(crate) fn is_queued(word: u32) -> bool {
    word & HOLDER == 0
}

/// The holder slot of a grant assigned and not yet published.
pub(crate) fn pending_holder(word: u32) -> Option<u32> {
    (word & PENDING != 0 && word & HOLDER != 0).then(|| (word & HOLDER) - 1)
}

/// Marks the waiter granted holder slot `holder`, not yet published (the waiter keeps
/// sleeping). The waiter must be queued.
pub(crate) fn assign(word: &AtomicU32, holder: u32) {
    word.fetch_or(PENDING | (holder + 1), Ordering::AcqRel);
}

/// Stores `value` (a published grant, `holder + 1`, or 0 to put the waiter back in the
/// queue). Returns whether the waiter sleeps and must be woken with [`wake`].
#[must_use = "a sleeping waiter must be woken"]
pub(crate) fn publish(word: &AtomicU32, holder: Option<u32>) -> bool {
    word.swap(holder.map_or(0, |h| h + 1), Ordering::AcqRel) & SLEEPING != 0
}

/// Bumps the nudge count so the waiter wakes and looks again. Returns whether it sleeps
/// and must be woken with [`wake`].
#[must_use = "a sleeping waiter must be woken"]
pub(crate) fn nudge(word: &AtomicU32) -> bool {
    let bump = |w: u32| Some((w & !(NUDGES | SLEEPING)) | (w.wrapping_add(NUDGE) & NUDGES));
    let old = word.fetch_update(Ordering::AcqRel, Ordering::Acquire, bump).expect("the update always succeeds");
    old & SLEEPING != 0
}

/// Nudges and wakes at once.
pub(crate) fn nudge_and_wake(word: &AtomicU32) {
    if nudge(word) {
        wake(word);
    }
}

/// Wakes every thread sleeping on `word`.
pub(crate) fn wake(word: &AtomicU32) {
    sys::wake_all(word);
}

/// Marks the waiter asleep if the word still holds `seen`: the value to sleep on then, so
/// that a grant or a nudge wakes the sleeper; `None` if the word changed (look again).
pub(crate) fn mark_sleeping(word: &AtomicU32, seen: u32) -> Option<u32> {
    let sleeping = seen | SLEEPING;
    (seen == sleeping || word.compare_exchange(seen, sleeping, Ordering::AcqRel, Ordering::Relaxed).is_ok())
        .then_some(sleeping)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grant_is_published_once_assigned_and_stored() {
        let word = AtomicU32::new(0);
        assert!(is_queued(0));
        assign(&word, 5);
        let pending = word.load(Ordering::Relaxed);
        assert!(!is_queued(pending) && granted_holder(pending).is_none() && pending_holder(pending) == Some(5));
        assert!(!publish(&word, Some(5)));
        assert_eq!(granted_holder(word.load(Ordering::Relaxed)), Some(5));
        assert_eq!(granted_holder(1), Some(0), "holder slot 0 is a grant too");
    }

    #[test]
    fn a_nudge_changes_the_word_keeps_the_grant_and_reports_a_sleeper() {
        let word = AtomicU32::new(0);
        assert!(!nudge(&word));
        assert_ne!(word.load(Ordering::Relaxed), 0);
        assert!(is_queued(word.load(Ordering::Relaxed)));
        word.fetch_or(SLEEPING, Ordering::Relaxed);
        assert!(nudge(&word), "a sleeper must be woken");
        assert_eq!(word.load(Ordering::Relaxed) & SLEEPING, 0);
        assign(&word, 3);
        assert!(!nudge(&word));
        assert_eq!(pending_holder(word.load(Ordering::Relaxed)), Some(3));
    }

    #[test]
    fn the_nudge_count_wraps_without_touching_the_flags() {
        let word = AtomicU32::new(NUDGES | 2);
        assert!(!nudge(&word));
        assert_eq!(word.load(Ordering::Relaxed), 2);
    }
}
