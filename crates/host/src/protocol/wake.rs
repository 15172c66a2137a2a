//! Nudges: making a queued request's sleeper look again.
//!
//! A nudge bumps the entry's word (see `layout::Word`) under the record lock, and, once
//! the lock is let go, wakes the sleeper with a futex wake if it was marked sleeping, and
//! rings its process's doorbell if it is waited for asynchronously (one thread of that
//! process sleeps on the doorbell for all its async waits).
//!
//! A nudge from a process that dies before the futex wake is lost, and that is safe: a
//! sleeper is nudged only by a process it depends on (a holder that releases, the request
//! ahead of it leaving the queue), and a sleeper watches the processes it depends on and
//! is woken when one dies (see `wait::watch`), whatever state the dead one left.

use crate::layout::{Entry, Word, ASYNC};
use crate::shm::Shm;
use crate::sync::atomic::{AtomicU32, Ordering};
use crate::sys::futex;

/// Wake-ups to make once the record lock is let go.
#[derive(Default)]
pub(crate) struct Wakes<'a> {
    words: Vec<&'a AtomicU32>,
}

impl<'a> Wakes<'a> {
    /// Bumps entry `e`'s word; remembers to wake its sleeper and ring its owner's doorbell.
    pub(crate) fn nudge(&mut self, shm: &'a Shm, e: &'a Entry) {
        if bump(&e.word) {
            self.words.push(&e.word);
        }
        if e.state.load(Ordering::Acquire) & ASYNC != 0 {
            if let Ok(slot) = shm.slot(e.owner.load(Ordering::Acquire)) {
                if bump(&slot.doorbell) {
                    self.words.push(&slot.doorbell);
                }
            }
        }
        crash_point!("wake.nudged");
    }

    /// Makes the futex wakes.
    pub(crate) fn run(&mut self) {
        for word in self.words.drain(..) {
            futex::wake_all(word);
        }
    }
}

impl Drop for Wakes<'_> {
    fn drop(&mut self) {
        self.run();
    }
}

/// Bumps the count of a [`Word`] and clears its `SLEEPING` bit. Returns whether it was
/// set: then the sleeper must be woken.
pub(crate) fn bump(word: &AtomicU32) -> bool {
    let bumped = |w: u32| Some(w.wrapping_add(1) & Word::COUNT);
    let old = word.fetch_update(Ordering::AcqRel, Ordering::Acquire, bumped).unwrap_or_else(|w| w);
    old & Word::SLEEPING != 0
}

/// Bumps a [`Word`] and wakes its sleepers whether or not it was marked sleeping: for a
/// death notice or an alarm, where a nudge half made by a process that died may have
/// cleared the mark without waking.
pub(crate) fn bump_and_wake(word: &AtomicU32) {
    bump(word);
    futex::wake_all(word);
}

/// Marks a [`Word`] sleeping if it still holds `seen`. Returns the value to sleep on, or
/// `None` if the word changed (look again).
pub(crate) fn mark_sleeping(word: &AtomicU32, seen: u32) -> Option<u32> {
    let sleeping = seen | Word::SLEEPING;
    (seen == sleeping || word.compare_exchange(seen, sleeping, Ordering::AcqRel, Ordering::Relaxed).is_ok())
        .then_some(sleeping)
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_bump_changes_the_word_and_reports_a_sleeper_once() {
        let word = AtomicU32::new(0);
        assert!(!bump(&word));
        assert_eq!(word.load(Ordering::Relaxed), 1);
        let sleeping = mark_sleeping(&word, 1).unwrap();
        assert_eq!(sleeping, 1 | Word::SLEEPING);
        assert!(bump(&word), "a sleeper must be woken");
        assert_eq!(word.load(Ordering::Relaxed), 2);
        assert_eq!(mark_sleeping(&word, 1), None, "a changed word is not slept on");
    }

    #[test]
    fn the_count_wraps_without_touching_the_flag() {
        let word = AtomicU32::new(Word::COUNT);
        assert!(!bump(&word));
        assert_eq!(word.load(Ordering::Relaxed), 0);
    }
}
