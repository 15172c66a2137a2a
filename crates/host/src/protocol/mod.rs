//! One name's fair, weighted semaphore in shared memory.
//!
//! Every change to a name happens under its record lock (`lock`), a futex word that a
//! live process takes over from a dead owner. The uncontended acquire is one
//! compare-and-swap on that word, a few stores and one swap to let it go: no system call.
//!
//! # Invariants
//!
//! 1. **The entries are the truth.** A process's holds, queued requests and open names
//!    are entries in its own arena. An entry's `state` is written only under the record
//!    lock of the record it names, and it is the commit point of every operation: a
//!    grant is made the moment an entry says `Hold`.
//! 2. **The rest is derived**, under the same lock: `available` is the capacity less the
//!    permits of the holds; the lists link the entries; `last_token` is at least every
//!    hold's token, `next_ticket` above every queued ticket. A process that dies holding
//!    the lock leaves them to the next taker, who rebuilds them from the entries of the
//!    live processes (`repair::rebuild`), dropping the dead ones'.
//! 3. **FIFO, no barging.** A queued request is granted only when its permits and those
//!    of every request ahead of it are free (so the ones ahead still fit), and nothing
//!    is granted outside the queue while it is not empty. Writers of a reader-writer
//!    lock ask for every permit, so a queued writer holds back the readers behind it.
//! 4. **A request grants itself.** Nobody grants a request on its owner's behalf: a
//!    release nudges the requests that can now be granted, whose owners take the record
//!    lock and move their entries from the queue to the holds. So a grant never depends
//!    on a process that can die before telling the grantee (see `wake`).
//! 5. **A sleeper watches whom it depends on**: the head of the queue, every holder; any
//!    other request, the one just ahead of it. Each of those nudges it when it must look
//!    again, and if one dies instead, the sleeper's watcher wakes it (`wait::watch`).
//! 6. **Liveness is decided under the lock.** A process is judged dead (its slot's
//!    liveness lock is free) only while the record lock is held, and only for what is
//!    done in that hold: a slot reused meanwhile by a new process is never taken for
//!    the dead one. A lock word names its owner's slot and incarnation (see `lock`).

mod fast;
mod hold;
mod list;
mod lock;
mod ops;
mod repair;
mod snapshot;
mod users;
mod wake;

use latchkey_model::{Error, ErrorKind, Result};

pub(crate) use fast::Fast;
pub(crate) use hold::is_ours as hold_is_ours;
#[cfg(test)]
pub(crate) use lock::try_lock as try_lock_word;
pub(crate) use lock::{disown, lock as lock_word, lost, WordGuard};
pub(crate) use ops::{Grant, Polled};
pub(crate) use wake::{awake, bump_and_wake, mark_sleeping};

use crate::layout::{Key, Record};
use crate::shm::Shm;
use crate::sync::atomic::Ordering;
use wake::Wakes;

/// One record of a namespace, known to hold a name of generation `generation`.
#[derive(Clone, Copy)]
pub(crate) struct Rec<'a> {
    pub shm: &'a Shm,
    pub index: u32,
    pub r: &'a Record,
    pub generation: u32,
}

impl<'a> Rec<'a> {
    /// Record `index`, expected to hold a name of generation `generation`.
    pub(crate) fn new(shm: &'a Shm, index: u32, generation: u32) -> Result<Rec<'a>> {
        Ok(Rec { shm, index, r: shm.record(index)?, generation })
    }

    /// Record `index`, already found at `r` (records never move).
    #[inline]
    pub(crate) fn at(shm: &'a Shm, index: u32, r: &'a Record, generation: u32) -> Rec<'a> {
        Rec { shm, index, r, generation }
    }

    /// Takes the record lock, rebuilding the record if its last owner died holding it.
    /// Fails if the namespace is lost (nothing may be granted in it), or if the record no
    /// longer holds the name (`HandleLost`).
    #[inline]
    pub(crate) fn lock(self) -> Result<Locked<'a>> {
        if self.shm.is_lost() {
            return Err(lost());
        }
        self.lock_any()
    }

    /// [`lock`](Self::lock), also in a lost namespace: for releases and withdrawals, which
    /// grant nothing and let the other processes still in it go on until they notice.
    #[inline]
    pub(crate) fn lock_any(self) -> Result<Locked<'a>> {
        let guard = lock_word(self.shm, &self.r.lock, || repair::rebuild(self))?;
        let locked = Locked { rec: self, _guard: guard, wakes: Wakes::default() };
        if Key(self.r.key.load(Ordering::Acquire)) != Key::ready(self.generation) {
            return Err(stale());
        }
        Ok(locked)
    }
}

/// A record under its lock: every change of the protocol is a method of it. Letting it go
/// unlocks, then makes the wake-ups its changes called for.
pub(crate) struct Locked<'a> {
    rec: Rec<'a>,
    /// Dropped before `wakes`: the lock is let go first.
    _guard: WordGuard<'a>,
    wakes: Wakes<'a>,
}

/// The error for a record that no longer holds the name it was opened for.
pub(crate) fn stale() -> Error {
    Error::new(ErrorKind::HandleLost, "the name's record was reclaimed while open; open the name again")
}
