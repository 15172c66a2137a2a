//! A lock in shared memory that a live process can take over from a dead one: the
//! record lock of each name, and the table lock of the namespace.
//!
//! The word is 0 when free, else the owner's process slot + 1, with [`LOCK_CONTENDED`]
//! set while someone sleeps on it. A waiter that finds the owner dead (after one wait,
//! so that a slot being claimed is not mistaken for dead) takes the lock over and repairs
//! what the dead owner may have left half done.

use std::sync::atomic::{AtomicU32, Ordering};

use crate::layout::LOCK_CONTENDED;
use crate::namespace::Namespace;
use crate::record::owner_of;
use crate::repair::LIVENESS_PERIOD;
use crate::sys;

/// Takes the lock `word`; if it is taken over from a dead owner, runs `repair` first.
pub(crate) fn lock<'a>(ns: &Namespace, word: &'a AtomicU32, repair: impl FnOnce()) -> WordLock<'a> {
    let me = owner_of(ns.slot());
    if word.compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed).is_ok() {
        return WordLock { word };
    }
    let mut waited = false;
    loop {
        let current = word.load(Ordering::Relaxed);
        if current == 0 {
            if word.compare_exchange(0, me | LOCK_CONTENDED, Ordering::Acquire, Ordering::Relaxed).is_ok() {
                return WordLock { word };
            }
            continue;
        }
        let owner = current & !LOCK_CONTENDED;
        if waited && !ns.is_alive(owner - 1) {
            if word.compare_exchange(current, me | LOCK_CONTENDED, Ordering::Acquire, Ordering::Relaxed).is_ok() {
                repair();
                return WordLock { word };
            }
            continue;
        }
        if current & LOCK_CONTENDED == 0
            && word.compare_exchange(current, current | LOCK_CONTENDED, Ordering::Relaxed, Ordering::Relaxed).is_err()
        {
            continue;
        }
        sys::wait(word, current | LOCK_CONTENDED, Some(LIVENESS_PERIOD));
        waited = true;
    }
}

/// A held lock; released on drop.
pub(crate) struct WordLock<'a> {
    word: &'a AtomicU32,
}

impl Drop for WordLock<'_> {
    fn drop(&mut self) {
        if self.word.swap(0, Ordering::Release) & LOCK_CONTENDED != 0 {
            sys::wake(self.word, 1);
        }
    }
}
