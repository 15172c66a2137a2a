//! The namespace's table of names: finding a name's record, claiming an empty one, and
//! what a process left in the table when it died.

use std::sync::atomic::Ordering;

use latchkey_model::{ErrorKind, Result};

use crate::layout::*;
use crate::namespace::Namespace;
use crate::record::{owner_of, Rec, PENDING};

/// FNV-1a: the same in every process, unlike the standard library's hashers.
fn hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
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

impl Namespace {
    /// Finds the record of `name`, or claims an empty one for it with `capacity`.
    pub(crate) fn find_or_create(&self, name: &str, capacity: u32) -> Result<Rec<'_>> {
        let words = name_words(name);
        let start = (hash(name) % RECORDS as u64) as usize;
        for probe in 0..RECORDS {
            let index = (start + probe) % RECORDS;
            let r = self.record(index);
            loop {
                let key = r.key.load(Ordering::Acquire);
                match key & 0xff {
                    KEY_READY if matches(r, name, &words) => return Rec::open(self, index, name, capacity),
                    KEY_READY => break,
                    KEY_EMPTY | KEY_CLAIMING => {
                        if key & 0xff == KEY_CLAIMING && self.is_alive((key >> 8).saturating_sub(1)) {
                            std::thread::yield_now(); // a live process is writing the name
                            continue;
                        }
                        let claim = KEY_CLAIMING | (owner_of(self.slot()) << 8);
                        if r.key.compare_exchange(key, claim, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
                            init(r, name, &words, capacity);
                            r.key.store(KEY_READY, Ordering::Release);
                            return Rec::open(self, index, name, capacity);
                        }
                    }
                    _ => {
                        return Err(self.error(ErrorKind::Corrupted, format!("record key {key:#x} is not valid"), name))
                    }
                }
            }
        }
        Err(self.error(ErrorKind::Unavailable, format!("all {RECORDS} names of the namespace are in use"), name))
    }

    /// The record of `name` if it exists.
    pub(crate) fn find(&self, name: &str) -> Option<&Record> {
        let words = name_words(name);
        let start = (hash(name) % RECORDS as u64) as usize;
        (0..RECORDS).map(|probe| self.record((start + probe) % RECORDS)).find_map(|r| {
            match r.key.load(Ordering::Acquire) & 0xff {
                KEY_READY if matches(r, name, &words) => Some(Some(r)),
                KEY_EMPTY => Some(None),
                _ => None,
            }
        })?
    }

    /// The record at `index`, opened with `capacity`.
    pub(crate) fn rec(&self, index: usize, capacity: u32) -> Rec<'_> {
        Rec { ns: self, r: self.record(index), index, capacity }
    }

    /// Marks record `index` as open in this process (`open`) or not.
    pub(crate) fn set_user(&self, index: usize, open: bool) {
        let slot = self.slot() as usize;
        let (word, bit) = (&self.record(index).users[slot / 64], 1u64 << (slot % 64));
        if open {
            word.fetch_or(bit, Ordering::AcqRel);
        } else {
            word.fetch_and(!bit, Ordering::AcqRel);
        }
    }

    /// Whether any record still names `slot` as a holder, a waiter, the record lock's
    /// owner or a name's claimer: what a process that died in `slot` may have left
    /// behind. Clears the slot's `users` bits on the way: they were the dead process's.
    pub(crate) fn scrub_slot(&self, slot: u32) -> bool {
        let owner = owner_of(slot);
        let (word, bit) = (slot as usize / 64, 1u64 << (slot % 64));
        let mut left = false;
        for index in 0..RECORDS {
            let r = self.record(index);
            let key = r.key.load(Ordering::Acquire);
            match key & 0xff {
                KEY_EMPTY => continue,
                KEY_CLAIMING => {
                    left |= key >> 8 == owner;
                    continue;
                }
                _ => {}
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

    /// Repairs the records where the dead processes of `slots` hold or wait.
    pub(crate) fn repair_left_by(&self, slots: &[u32]) {
        if slots.is_empty() {
            return;
        }
        let left_by = |owner: u32| owner & !PENDING != 0 && slots.contains(&((owner & !PENDING) - 1));
        for index in 0..RECORDS {
            let r = self.record(index);
            if r.key.load(Ordering::Acquire) & 0xff == KEY_READY
                && (r.holders.iter().any(|h| left_by(h.owner.load(Ordering::Acquire)))
                    || r.waiters.iter().any(|w| left_by(w.owner.load(Ordering::Acquire))))
            {
                self.rec(index, r.capacity.load(Ordering::Acquire)).repair_if_dead();
            }
        }
    }

    /// Every record that has a name.
    pub(crate) fn records(&self) -> impl Iterator<Item = &Record> {
        (0..RECORDS).map(|i| self.record(i)).filter(|r| r.key.load(Ordering::Acquire) & 0xff == KEY_READY)
    }
}

fn matches(r: &Record, name: &str, words: &[u64; NAME_WORDS]) -> bool {
    r.name_len.load(Ordering::Relaxed) as usize == name.len()
        && (0..name.len().div_ceil(8)).all(|i| r.name[i].load(Ordering::Relaxed) == words[i])
}

/// Fills a claimed record. Its holders and waiters are empty: a record is only ever
/// claimed fresh, or taken over from a claimer that died before any grant.
fn init(r: &Record, name: &str, words: &[u64; NAME_WORDS], capacity: u32) {
    r.name_len.store(name.len() as u32, Ordering::Relaxed);
    for (slot, word) in r.name.iter().zip(words) {
        slot.store(*word, Ordering::Relaxed);
    }
    r.capacity.store(capacity, Ordering::Relaxed);
    r.lock.store(0, Ordering::Relaxed);
    r.state.store(u64::from(capacity), Ordering::Relaxed);
}

/// The name stored in a record.
pub(crate) fn name_of(r: &Record) -> String {
    let len = r.name_len.load(Ordering::Relaxed) as usize;
    let bytes: Vec<u8> = r.name.iter().flat_map(|w| w.load(Ordering::Relaxed).to_le_bytes()).take(len).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}
