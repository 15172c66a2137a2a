//! A lock in shared memory that a live process can take over from a dead one: the record
//! lock of each name, and the namespace's table and grow locks.
//!
//! The word is 0 when free, else its owner (see [`Owner`]), with [`LOCK_CONTENDED`] set
//! while someone sleeps on it. A process that finds the owner dead takes the lock over
//! and repairs what the owner may have left half done (`on_takeover`): every change made
//! under one of these locks can be redone from the truth the lock does not guard (see
//! `protocol::rebuild`).
//!
//! An owner is a process slot *and its incarnation*, bumped each time a process takes the
//! slot: a slot reused by a new process is never taken for the dead owner of a lock it
//! left (the newcomer, and any contender, take that lock over), and a contender that
//! judged an owner dead cannot take the lock from a newcomer that took the same slot
//! meanwhile and then the lock (its compare-and-swap expects the dead incarnation).

use std::time::Duration;

use latchkey_model::{Error, ErrorKind, Result};

use crate::layout::{Owner, LOCK_CONTENDED};
use crate::shm::Shm;
use crate::sync::atomic::{AtomicU32, Ordering};
use crate::sys::futex::{self, Sleep};

/// Spins before a contender first checks the owner and sleeps: a lock is held for well
/// under a microsecond, unless its owner was descheduled or died. (Under loom, where a
/// spin is a yield to another thread, one.)
const SPINS: u32 = if cfg!(loom) { 1 } else { 200 };
/// How long a contender sleeps before it checks again whether the owner died (the owner's
/// death does not wake it).
const RECHECK: Duration = Duration::from_millis(5);

/// The error for using a namespace that is gone.
pub(crate) fn lost() -> Error {
    Error::new(
        ErrorKind::HandleLost,
        "the namespace file was deleted, replaced or cut short; holds made in it no longer exclude anyone",
    )
}

/// A held lock word; unlocked when dropped.
pub(crate) struct WordGuard<'a> {
    word: &'a AtomicU32,
}

/// Takes the lock `word`, on behalf of this process's slot. If it is taken over from a
/// dead owner, runs `on_takeover` before returning (still holding the lock).
#[inline]
pub(crate) fn lock<'a>(
    shm: &Shm,
    word: &'a AtomicU32,
    on_takeover: impl FnOnce() -> Result<()>,
) -> Result<WordGuard<'a>> {
    let me = shm.owner();
    if word.compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed).is_ok() {
        return Ok(WordGuard { word });
    }
    lock_contended(shm, word, me, on_takeover)
}

/// Takes the lock `word` if it is free; `None` if anyone holds it (a dead owner included:
/// taking over is for [`lock`]).
#[inline]
pub(crate) fn try_lock<'a>(shm: &Shm, word: &'a AtomicU32) -> Option<WordGuard<'a>> {
    let me = shm.owner();
    // (`then`, not `then_some`: a guard made and dropped on failure would unlock the owner's lock.)
    word.compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed).is_ok().then(|| WordGuard { word })
}

#[cold]
fn lock_contended<'a>(
    shm: &Shm,
    word: &'a AtomicU32,
    me: u32,
    on_takeover: impl FnOnce() -> Result<()>,
) -> Result<WordGuard<'a>> {
    let mut spins = 0;
    loop {
        let current = word.load(Ordering::Relaxed);
        if current == 0 {
            // Once contended, keep the bit: another contender may sleep.
            let new = if spins >= SPINS { me | LOCK_CONTENDED } else { me };
            if word.compare_exchange(0, new, Ordering::Acquire, Ordering::Relaxed).is_ok() {
                return Ok(WordGuard { word });
            }
            continue;
        }
        if spins < SPINS {
            spins += 1;
            crate::sync::spin_loop();
            continue;
        }
        // The alarm is read before the owner is judged alive: an alarm rung after that
        // wakes the sleep below.
        let alarm = shm.registration().alarm();
        let alarm = Sleep { word: alarm, expected: alarm.load(Ordering::Acquire) };
        if !shm.owner_alive(Owner(current & !LOCK_CONTENDED)) {
            if word.compare_exchange(current, me | LOCK_CONTENDED, Ordering::Acquire, Ordering::Relaxed).is_ok() {
                let guard = WordGuard { word };
                crash_point!("lock.taken_over");
                on_takeover()?;
                return Ok(guard);
            }
            continue;
        }
        if current & LOCK_CONTENDED == 0
            && word.compare_exchange(current, current | LOCK_CONTENDED, Ordering::Relaxed, Ordering::Relaxed).is_err()
        {
            continue;
        }
        // (Loom models a death by ringing the alarm: no timer.)
        let recheck = if cfg!(loom) { None } else { Some(RECHECK) };
        futex::sleep(Sleep { word, expected: current | LOCK_CONTENDED }, Some(alarm), recheck);
    }
}

/// If the lock `word` is held by `owner` (an incarnation of a dead process whose slot and
/// incarnation a new process takes), makes it name [`Owner::NOBODY`]; the next taker takes
/// it over. A contender about to take it over from `owner` fails its compare-and-swap.
pub(crate) fn disown(word: &AtomicU32, owner: Owner) {
    let mut current = word.load(Ordering::Acquire);
    while current & !LOCK_CONTENDED == owner.0 {
        let nobody = Owner::NOBODY.0 | (current & LOCK_CONTENDED);
        match word.compare_exchange(current, nobody, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => {
                crash_point!("lock.disowned");
                futex::wake_all(word);
                return;
            }
            Err(actual) => current = actual,
        }
    }
}

impl Drop for WordGuard<'_> {
    fn drop(&mut self) {
        if self.word.swap(0, Ordering::Release) & LOCK_CONTENDED != 0 {
            futex::wake_all(self.word);
        }
    }
}
