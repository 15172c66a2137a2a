//! Nudges: making a queued request's sleeper look again.
//!
//! A nudge bumps the entry's word (see `layout::Word`) under the record lock, and, once
//! the lock is let go, wakes the sleeper with a futex wake if it was marked sleeping, and
//! rings its process's doorbell if it is waited for asynchronously (one thread of that
//! process sleeps on the doorbell for all its async waits).
//!
//! Only the sleeper clears `SLEEPING`, once it is awake: so a nudger that dies between
//! its bump and its futex wake leaves the mark for the next nudger, who wakes the sleeper.
//! And the first nudge after such a death comes from a process the sleeper depends on (a
//! holder that releases, the request ahead of it granted or leaving the queue), or from
//! the sleeper's watcher when one of those dies (see `wait::watch`).

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

/// Bumps the count of a [`Word`]. Returns whether its sleeper is marked sleeping: then it
/// must be woken.
pub(crate) fn bump(word: &AtomicU32) -> bool {
    let bumped = |w: u32| Some((w & Word::SLEEPING) | (w.wrapping_add(1) & Word::COUNT));
    let old = word.fetch_update(Ordering::AcqRel, Ordering::Acquire, bumped).unwrap_or_else(|w| w);
    old & Word::SLEEPING != 0
}

/// Bumps a [`Word`] and wakes its sleepers whether or not it is marked sleeping: for a
/// death notice or an alarm.
pub(crate) fn bump_and_wake(word: &AtomicU32) {
    bump(word);
    futex::wake_all(word);
}

/// Marks a [`Word`] sleeping if it still holds `seen`. Returns the value to sleep on, or
/// `None` if the word changed (look again). The sleeper calls [`awake`] once it wakes.
pub(crate) fn mark_sleeping(word: &AtomicU32, seen: u32) -> Option<u32> {
    let sleeping = seen | Word::SLEEPING;
    (seen == sleeping || word.compare_exchange(seen, sleeping, Ordering::AcqRel, Ordering::Relaxed).is_ok())
        .then_some(sleeping)
}

/// Clears the sleeping mark of a [`Word`]: its sleeper is awake.
pub(crate) fn awake(word: &AtomicU32) {
    word.fetch_and(!Word::SLEEPING, Ordering::AcqRel);
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_bump_changes_the_word_and_reports_a_sleeper_until_it_is_awake() {
        let word = AtomicU32::new(0);
        assert!(!bump(&word));
        assert_eq!(word.load(Ordering::Relaxed), 1);
        let sleeping = mark_sleeping(&word, 1).unwrap();
        assert_eq!(sleeping, 1 | Word::SLEEPING);
        assert!(bump(&word), "a sleeper must be woken");
        // A nudger that died before its wake leaves the mark: the next one wakes the sleeper.
        assert!(bump(&word), "the sleeper is still marked until it says it is awake");
        assert_eq!(word.load(Ordering::Relaxed), 3 | Word::SLEEPING);
        awake(&word);
        assert!(!bump(&word));
        assert_eq!(mark_sleeping(&word, 1), None, "a changed word is not slept on");
    }

    #[test]
    fn the_count_wraps_without_touching_the_flag() {
        let word = AtomicU32::new(Word::COUNT);
        assert!(!bump(&word));
        assert_eq!(word.load(Ordering::Relaxed), 0);
    }
}
