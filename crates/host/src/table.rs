//! The namespace's table of names: finding a name's record, adding a name, reclaiming
//! unused names when the table is full, and what a process left in the table when it died.
//!
//! The table is open addressing with linear probing from the name's hash. Looking a
//! name up takes no lock; adding or reclaiming names takes the table lock, so two
//! processes never add the same name twice. A name is reclaimed only when no live
//! process has it open and it is idle; its record becomes a tomb (a lookup goes on past
//! it) and its last fencing token is kept in the header's token floor.

use std::sync::atomic::Ordering;

use latchkey_model::{ErrorKind, Result};

use crate::layout::*;
use crate::namespace::Namespace;
use crate::record::{owner_of, Rec, PENDING};
use crate::word_lock::{self, WordLock};

/// The record where a lookup of `name` starts: FNV-1a, the same in every process,
/// unlike the standard library's hashers.
pub(crate) fn home(name: &[u8]) -> usize {
    let hash = name.iter().fold(0xcbf2_9ce4_8422_2325, |h: u64, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    (hash % RECORDS as u64) as usize
}

fn name_words(name: &str) -> [u64; NAME_WORDS] {
    let mut words = [0u64; NAME_WORDS];
    for (i, chunk) in name.as_bytes().chunks(8).enumerate() {
        let mut bytes = [0u8; 8];
        bytes[..chunk.len()].copy_from_slice(chunk);
        words[i] = u64::from_le_bytes(bytes);
    }
    words
}

/// The records a lookup of `name` visits, in order.
fn probes(name: &str) -> impl Iterator<Item = usize> {
    let start = home(name.as_bytes());
    (0..RECORDS).map(move |probe| (start + probe) % RECORDS)
}

/// A name's record, as found: its index and its generation (see [`Key`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Found {
    pub index: usize,
    pub generation: u32,
}

impl Namespace {
    /// Finds the record of `name`, or adds the name with `capacity`.
    pub(crate) fn find_or_create(&self, name: &str, capacity: u32) -> Result<(Rec<'_>, Found)> {
        let found = match self.lookup(name)? {
            Some(found) => found,
            None => {
                let table = self.lock_table();
                let found = match self.lookup(name)? {
                    Some(found) => found,
                    None => match self.create(name, capacity) {
                        Some(found) => found,
                        None if self.sweep() > 0 => self.create(name, capacity).expect("a reclaimed record is free"),
                        None => {
                            let why = format!("all {RECORDS} names of the namespace are in use");
                            return Err(self.error(ErrorKind::Unavailable, why, name));
                        }
                    },
                };
                drop(table);
                found
            }
        };
        Ok((Rec::open(self, found, name, capacity)?, found))
    }

    /// The record of `name` if it exists, without taking any lock.
    pub(crate) fn lookup(&self, name: &str) -> Result<Option<Found>> {
        let words = name_words(name);
        for index in probes(name) {
            let r = self.record(index);
            loop {
                let key = Key(r.key.load(Ordering::SeqCst));
                let state = key.state().ok_or_else(|| {
                    self.error(
                        ErrorKind::Corrupted,
                        format!("record {index} has a key {:#x} no latchkey writes", key.0),
                        name,
                    )
                })?;
                match state {
                    KeyState::Empty => return Ok(None),
                    KeyState::Tomb => break,
                    KeyState::Ready | KeyState::Reclaiming if !matches(r, name, &words) => break,
                    // The name was read while the key held still: it is this record's.
                    KeyState::Ready if r.key.load(Ordering::SeqCst) == key.0 => {
                        return Ok(Some(Found { index, generation: key.generation() }))
                    }
                    KeyState::Ready => continue,
                    KeyState::Reclaiming => {
                        if !self.is_alive(key.owner() - 1) {
                            // Died while checking: nothing was changed yet.
                            let ready = Key::new(KeyState::Ready, 0, key.generation());
                            let _ = r.key.compare_exchange(key.0, ready.0, Ordering::SeqCst, Ordering::SeqCst);
                        }
                        std::thread::yield_now();
                    }
                }
            }
        }
        Ok(None)
    }

    /// Whether record `found` still holds the name it was found for. A process that has
    /// marked itself a user of the record (see `set_user`) and then sees this is safe
    /// from reclaiming: reclaiming marks the key before it looks for users.
    pub(crate) fn still_holds(&self, found: Found) -> bool {
        loop {
            let key = Key(self.record(found.index).key.load(Ordering::SeqCst));
            match key.state() {
                Some(KeyState::Reclaiming) => std::thread::yield_now(),
                Some(KeyState::Ready) => return key.generation() == found.generation,
                _ => return false,
            }
        }
    }

    /// Under the table lock: puts `name` in the first free record of its probe sequence.
    fn create(&self, name: &str, capacity: u32) -> Option<Found> {
        let index = probes(name).find(|&i| matches!(self.key(i).state(), Some(KeyState::Empty | KeyState::Tomb)))?;
        let r = self.record(index);
        let generation = self.key(index).generation();
        let words = name_words(name);
        r.name_len.store(name.len() as u32, Ordering::Relaxed);
        for (slot, word) in r.name.iter().zip(&words) {
            slot.store(*word, Ordering::Relaxed);
        }
        // Its holders and waiters are free: a record is reclaimed only when idle.
        r.capacity.store(capacity, Ordering::Relaxed);
        r.lock.store(0, Ordering::Relaxed);
        r.state.store(u64::from(capacity), Ordering::Relaxed);
        r.users.iter().for_each(|word| word.store(0, Ordering::Relaxed));
        let floor = self.header().token_floor.load(Ordering::Acquire);
        r.last_token.fetch_max(floor, Ordering::AcqRel);
        r.key.store(Key::new(KeyState::Ready, 0, generation).0, Ordering::SeqCst);
        Some(Found { index, generation })
    }

    /// Under the table lock: reclaims every name that no live process has open and
    /// that is idle. Returns how many.
    pub(crate) fn sweep(&self) -> usize {
        let reclaimed = (0..RECORDS).filter(|&index| self.reclaim(index)).count();
        self.empty_tombs();
        reclaimed
    }

    fn reclaim(&self, index: usize) -> bool {
        let r = self.record(index);
        let key = Key(r.key.load(Ordering::SeqCst));
        if key.state() != Some(KeyState::Ready) {
            return false;
        }
        let rec = self.rec(index, r.capacity.load(Ordering::Acquire));
        rec.repair_if_dead();
        let checking = Key::new(KeyState::Reclaiming, owner_of(self.slot()), key.generation());
        if !rec.is_idle() || r.key.compare_exchange(key.0, checking.0, Ordering::SeqCst, Ordering::SeqCst).is_err() {
            return false;
        }
        // A process that marked itself a user before the key changed is seen here; one
        // that does after sees the key changed (see `still_holds`).
        if self.has_live_user(index) || !rec.is_idle() {
            r.key.store(key.0, Ordering::SeqCst);
            return false;
        }
        self.header().token_floor.fetch_max(r.last_token.load(Ordering::Acquire), Ordering::AcqRel);
        r.key.store(Key::new(KeyState::Tomb, 0, key.generation().wrapping_add(1)).0, Ordering::SeqCst);
        true
    }

    /// Turns back into empty records the tombs that no lookup of a present name passes
    /// (the records between a name's home and its record), so that lookups of absent
    /// names stop early again.
    fn empty_tombs(&self) {
        let mut passed = vec![false; RECORDS];
        for index in (0..RECORDS).filter(|&i| self.key(i).state() == Some(KeyState::Ready)) {
            let mut i = home(&name_bytes(self.record(index)));
            while i != index {
                passed[i] = true;
                i = (i + 1) % RECORDS;
            }
        }
        for index in (0..RECORDS).filter(|&i| !passed[i]) {
            let key = self.key(index);
            if key.state() == Some(KeyState::Tomb) {
                self.record(index).key.store(Key::new(KeyState::Empty, 0, key.generation()).0, Ordering::SeqCst);
            }
        }
    }

    fn key(&self, index: usize) -> Key {
        Key(self.record(index).key.load(Ordering::SeqCst))
    }

    /// Whether a live process has record `index` open.
    pub(crate) fn has_live_user(&self, index: usize) -> bool {
        self.record(index).users.iter().enumerate().any(|(word, bits)| {
            let mut bits = bits.load(Ordering::SeqCst);
            while bits != 0 {
                let slot = (word * 64) as u32 + bits.trailing_zeros();
                if self.is_alive(slot) {
                    return true;
                }
                bits &= bits - 1;
            }
            false
        })
    }

    /// Takes the table lock, from a dead process if need be (then undoing the reclaim it
    /// was checking; an addition it left half done is in a record nobody looks at).
    pub(crate) fn lock_table(&self) -> WordLock<'_> {
        word_lock::lock(self, &self.header().table_lock, || {
            for r in (0..RECORDS).map(|i| self.record(i)) {
                let key = Key(r.key.load(Ordering::SeqCst));
                if key.state() == Some(KeyState::Reclaiming) {
                    r.key.store(Key::new(KeyState::Ready, 0, key.generation()).0, Ordering::SeqCst);
                }
            }
        })
    }

    /// The record at `index`, opened with `capacity`.
    pub(crate) fn rec(&self, index: usize, capacity: u32) -> Rec<'_> {
        Rec { ns: self, r: self.record(index), capacity }
    }

    /// Marks record `index` as open in this process (`open`) or not.
    pub(crate) fn set_user(&self, index: usize, open: bool) {
        let slot = self.slot() as usize;
        let (word, bit) = (&self.record(index).users[slot / 64], 1u64 << (slot % 64));
        if open {
            word.fetch_or(bit, Ordering::SeqCst);
        } else {
            word.fetch_and(!bit, Ordering::SeqCst);
        }
    }

    /// Whether the table lock, or any record, still names `slot` as a holder, a waiter,
    /// the record lock's owner or a reclaimer: what a process that died in `slot` may
    /// have left behind. Clears the slot's `users` bits on the way: they were the dead
    /// process's.
    pub(crate) fn scrub_slot(&self, slot: u32) -> bool {
        let owner = owner_of(slot);
        let (word, bit) = (slot as usize / 64, 1u64 << (slot % 64));
        let mut left = self.header().table_lock.load(Ordering::Acquire) & !LOCK_CONTENDED == owner;
        for index in 0..RECORDS {
            let r = self.record(index);
            let key = Key(r.key.load(Ordering::Acquire));
            match key.state() {
                Some(KeyState::Ready) => {}
                Some(KeyState::Reclaiming) => {
                    left |= key.owner() == owner;
                    continue;
                }
                _ => continue,
            }
            if r.users[word].load(Ordering::Relaxed) & bit != 0 {
                r.users[word].fetch_and(!bit, Ordering::AcqRel);
            }
            left |= r.lock.load(Ordering::Acquire) & !LOCK_CONTENDED == owner
                || r.holders.iter().any(|h| h.owner.load(Ordering::Acquire) & !PENDING == owner)
                || r.waiters.iter().any(|w| w.owner.load(Ordering::Acquire) == owner);
        }
        left
    }

    /// Repairs what the dead processes of `slots` left: the table lock, and the records
    /// where they hold or wait.
    pub(crate) fn repair_left_by(&self, slots: &[u32]) {
        if slots.is_empty() {
            return;
        }
        // Under the table lock, so that no record is reclaimed while it is repaired.
        let _table = self.lock_table();
        let left_by = |owner: u32| owner & !PENDING != 0 && slots.contains(&((owner & !PENDING) - 1));
        for index in 0..RECORDS {
            let r = self.record(index);
            if Key(r.key.load(Ordering::Acquire)).state() == Some(KeyState::Ready)
                && (r.holders.iter().any(|h| left_by(h.owner.load(Ordering::Acquire)))
                    || r.waiters.iter().any(|w| left_by(w.owner.load(Ordering::Acquire))))
            {
                self.rec(index, r.capacity.load(Ordering::Acquire)).repair_if_dead();
            }
        }
    }

    /// Every record that has a name, with its index.
    pub(crate) fn records(&self) -> impl Iterator<Item = (usize, &Record)> {
        (0..RECORDS)
            .map(|i| (i, self.record(i)))
            .filter(|(_, r)| Key(r.key.load(Ordering::Acquire)).state() == Some(KeyState::Ready))
    }
}

fn matches(r: &Record, name: &str, words: &[u64; NAME_WORDS]) -> bool {
    r.name_len.load(Ordering::Relaxed) as usize == name.len()
        && (0..name.len().div_ceil(8)).all(|i| r.name[i].load(Ordering::Relaxed) == words[i])
}

/// The name stored in a record.
pub(crate) fn name_of(r: &Record) -> String {
    String::from_utf8_lossy(&name_bytes(r)).into_owned()
}

fn name_bytes(r: &Record) -> Vec<u8> {
    let len = (r.name_len.load(Ordering::Relaxed) as usize).min(NAME_WORDS * 8);
    r.name.iter().flat_map(|w| w.load(Ordering::Relaxed).to_le_bytes()).take(len).collect()
}
