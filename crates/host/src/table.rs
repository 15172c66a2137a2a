//! The table of names: finding a name's record, adding a name, reclaiming names nobody
//! uses, and the names this process has open.
//!
//! **The index** maps a name's hash to its record: open addressing with linear probing in
//! a region of 2^k slots, each `hash << 32 | record + 1`. Looking a name up takes no lock
//! and checks every candidate against the record's own name and key, so a lookup that
//! races a change of the index can miss a name (it then looks again under the table
//! lock) but never finds a wrong one. Adding and removing names take the table lock; the
//! index grows by doubling into new space (the old region is left behind).
//!
//! **Records** are reused: a name that no live process has open, holds or waits for is
//! reclaimed when the table has doubled since the last sweep. Its key's generation is
//! bumped, so a handle or an entry made before can tell, and its last fencing token is
//! raised into the header's token floor, above which a name made again starts.
//!
//! A process that dies holding the table lock leaves the index and the free list to the
//! next taker, who rebuilds both from the records' keys.

use std::mem::size_of;

use latchkey_model::{describe_capacity, validate_name, Error, ErrorKind, Result};

use crate::layout::*;
use crate::namespace::{Namespace, OpenName};
use crate::protocol::{lock_word, Rec, WordGuard};
use crate::shm::{corrupted, published, Shm};
use crate::sync::atomic::{AtomicU64, Ordering};

/// A name's record, as found: its index and the generation of its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Found {
    pub index: u32,
    pub generation: u32,
}

/// The fewest names between two sweeps.
const SWEEP_MIN: u32 = 1024;

/// A name's 32-bit hash: FNV-1a, the same in every process, folded.
fn hash(name: &[u8]) -> u32 {
    let h = name.iter().fold(0xcbf2_9ce4_8422_2325, |h: u64, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    (h ^ (h >> 32)) as u32
}

fn name_words(name: &[u8]) -> [u64; NAME_WORDS] {
    let mut words = [0u64; NAME_WORDS];
    for (i, chunk) in name.chunks(8).enumerate() {
        let mut bytes = [0u8; 8];
        bytes[..chunk.len()].copy_from_slice(chunk);
        words[i] = u64::from_le_bytes(bytes);
    }
    words
}

/// Whether record `r` is named `name`.
fn is_named(r: &Record, name: &[u8]) -> bool {
    let words = name_words(name);
    r.name_len.load(Ordering::Acquire) as usize == name.len()
        && (0..name.len().div_ceil(8)).all(|i| r.name[i].load(Ordering::Acquire) == words[i])
}

/// The name stored in a record (lossy where the file is corrupted).
pub(crate) fn name_of(r: &Record) -> String {
    let len = (r.name_len.load(Ordering::Acquire) as usize).min(NAME_WORDS * 8);
    let bytes: Vec<u8> = r.name.iter().flat_map(|w| w.load(Ordering::Acquire).to_le_bytes()).take(len).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The index region: its slots.
struct Index<'a> {
    slots: &'a [AtomicU64],
}

impl<'a> Index<'a> {
    fn of(shm: &'a Shm) -> Result<Index<'a>> {
        let desc = shm.header().index.load(Ordering::Acquire);
        let (offset, log2) = (desc & !(PAGE - 1), (desc & (PAGE - 1)) as u32);
        if !(INDEX_MIN_LOG2..32).contains(&log2) {
            return Err(corrupted(format_args!("the name index has 2^{log2} slots")));
        }
        let len = 1usize << log2;
        // Bounds-checked through its last slot.
        let last = offset
            .checked_add((len as u64 - 1) * 8)
            .ok_or_else(|| corrupted("the name index lies outside the file"))?;
        shm.at::<AtomicU64>(last, "the name index")?;
        let first: &AtomicU64 = shm.at(offset, "the name index")?;
        // SAFETY: `len` slots from `first` lie inside the mapping (the last one was checked),
        // aligned, made of atomics.
        let slots = unsafe { std::slice::from_raw_parts(first as *const AtomicU64, len) };
        Ok(Index { slots })
    }

    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    /// Candidate records for a name of hash `h`, in probe order, until an empty slot.
    fn candidates(&self, h: u32) -> impl Iterator<Item = (usize, u32)> + '_ {
        let start = h as usize & self.mask();
        (0..self.slots.len())
            .map(move |i| (start + i) & self.mask())
            .map(|i| (i, self.slots[i].load(Ordering::Acquire)))
            .take_while(|(_, v)| *v != 0)
            .filter(move |(_, v)| (v >> 32) as u32 == h)
            .map(|(i, v)| (i, (v as u32).wrapping_sub(1)))
    }

    /// Under the table lock: puts record `index` of hash `h` in the first empty slot.
    fn insert(&self, h: u32, index: u32) {
        let start = h as usize & self.mask();
        for i in (0..self.slots.len()).map(|i| (start + i) & self.mask()) {
            if self.slots[i].load(Ordering::Acquire) == 0 {
                self.slots[i].store(u64::from(h) << 32 | u64::from(index + 1), Ordering::Release);
                crash_point!("index.inserted");
                return;
            }
        }
    }

    /// Under the table lock: removes the slot `i`, moving later slots of the same run back
    /// (so no lookup needs to go past an empty slot).
    fn remove(&self, mut i: usize) {
        let mask = self.mask();
        self.slots[i].store(0, Ordering::Release);
        crash_point!("index.removed");
        let mut j = i;
        for _ in 0..self.slots.len() {
            j = (j + 1) & mask;
            let v = self.slots[j].load(Ordering::Acquire);
            if v == 0 {
                return;
            }
            let home = (v >> 32) as usize & mask;
            let stays = if i <= j { i < home && home <= j } else { i < home || home <= j };
            if stays {
                continue;
            }
            self.slots[i].store(v, Ordering::Release);
            self.slots[j].store(0, Ordering::Release);
            crash_point!("index.shifted");
            i = j;
        }
    }
}

impl Namespace {
    /// The record of `name`, if the name is in the table. Takes no lock; can miss a name
    /// whose index slot is being moved (see the module documentation).
    pub(crate) fn lookup(&self, name: &str) -> Result<Option<Found>> {
        let shm = &self.shm;
        let index = Index::of(shm)?;
        for (_, record) in index.candidates(hash(name.as_bytes())) {
            let Ok(r) = shm.record(record) else { continue };
            let key = Key(r.key.load(Ordering::Acquire));
            if key.is_ready() && is_named(r, name.as_bytes()) && r.key.load(Ordering::Acquire) == key.0 {
                return Ok(Some(Found { index: record, generation: key.generation() }));
            }
        }
        Ok(None)
    }

    /// The record of `name`, looked up under the table lock if a lock-free look misses.
    pub(crate) fn find(&self, name: &str) -> Result<Option<Found>> {
        if let Some(found) = self.lookup(name)? {
            return Ok(Some(found));
        }
        let _table = self.lock_table()?;
        self.lookup(name)
    }

    /// The record of `name`, added with `capacity` if the name is new.
    pub(crate) fn find_or_create(&self, name: &str, capacity: u32) -> Result<Found> {
        validate_name(name)?;
        match self.lookup(name)? {
            Some(found) => Ok(found),
            None => self.create(name, capacity),
        }
    }

    /// Opens `name` as `capacity` in this process: finds or adds its record, and counts a
    /// handle of this process on it (the first one marks the process a user of the name,
    /// so the name is not reclaimed and its capacity does not change while it is open).
    pub(crate) fn open_name(&self, name: &str, capacity: u32) -> Result<Found> {
        validate_name(name)?;
        // (A few times at most: see `HostLock::locked`.)
        for _ in 0..8 {
            let found = match self.lookup(name)? {
                Some(found) => found,
                None => self.create(name, capacity)?,
            };
            match self.add_handle(found, name, capacity) {
                Err(e) if e.kind() == ErrorKind::HandleLost && !self.shm.is_lost() => continue, // reclaimed meanwhile
                other => return other.map(|()| found),
            }
        }
        Err(corrupted("a name's record changes under every lookup"))
    }

    /// Counts a handle on the record `found` of `name`.
    fn add_handle(&self, found: Found, name: &str, capacity: u32) -> Result<()> {
        let mut open = self.open_names.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(known) = open.get_mut(&found.index).filter(|o| o.generation == found.generation) {
            let current = self.shm.record(found.index)?.capacity.load(Ordering::Acquire);
            if current != capacity {
                return Err(Error::new(
                    ErrorKind::CapacityMismatch,
                    format!(
                        "the name is in use as {}, and was asked for as {}",
                        describe_capacity(current),
                        describe_capacity(capacity)
                    ),
                ));
            }
            known.handles += 1;
            return Ok(());
        }
        // The first handle of a name in this process: a slow path, where the file's
        // identity is checked (a name opened in a namespace deleted meanwhile must not be
        // granted there).
        if !self.verify_identity() {
            return Err(crate::protocol::lost());
        }
        let entry = self.take_entry()?;
        let result = Rec::new(&self.shm, found.index, found.generation).and_then(|rec| {
            let mut locked = rec.lock()?;
            if !is_named(rec.r, name.as_bytes()) {
                return Err(crate::protocol::stale());
            }
            locked.open_user(entry, capacity)
        });
        match result {
            Ok(()) => {
                open.insert(found.index, OpenName { entry, generation: found.generation, handles: 1 });
                Ok(())
            }
            Err(e) => {
                self.put_entry(entry);
                Err(e)
            }
        }
    }

    /// Uncounts a handle on record `index`; the last one closes the name in this process.
    pub(crate) fn close_name(&self, index: u32) {
        let mut open = self.open_names.lock().unwrap_or_else(|e| e.into_inner());
        let Some(known) = open.get_mut(&index) else { return };
        known.handles -= 1;
        if known.handles > 0 {
            return;
        }
        let known = open.remove(&index).expect("present");
        let closed = Rec::new(&self.shm, index, known.generation)
            .and_then(|rec| rec.lock())
            .and_then(|mut locked| locked.close_user(known.entry));
        // A lost or corrupted namespace keeps the entry: it is not reused.
        if closed.is_ok() {
            self.put_entry(known.entry);
        }
    }

    /// Takes the table lock, rebuilding the index and the free list if its owner died.
    pub(crate) fn lock_table(&self) -> Result<WordGuard<'_>> {
        lock_word(&self.shm, &self.shm.header().table_lock, || self.rebuild_table())
    }

    /// Adds `name` with `capacity`, unless it was added meanwhile.
    fn create(&self, name: &str, capacity: u32) -> Result<Found> {
        // A slow path: is the file still the one mapped? A name new to a namespace deleted
        // meanwhile (locked by name, say) must not be granted there, even before the
        // watcher thread has seen the deletion. (Before the table lock, which other
        // processes wait for by spinning: two system calls are long for that.)
        if !self.verify_identity() {
            return Err(crate::protocol::lost());
        }
        let _table = self.lock_table()?;
        if let Some(found) = self.lookup(name)? {
            return Ok(found);
        }
        let _op = crate::crash::op("create");
        let header = self.shm.header();
        if header.free_records.load(Ordering::Acquire) == 0 {
            let live = header.live_records.load(Ordering::Acquire);
            if live >= 2 * header.swept_at.load(Ordering::Acquire).max(SWEEP_MIN / 2) {
                self.sweep()?;
            }
            if header.free_records.load(Ordering::Acquire) == 0 {
                self.grow_records()?;
            }
        }
        let index = header.free_records.load(Ordering::Acquire).wrapping_sub(1);
        let r = self.shm.record(index)?;
        let generation = Key(r.key.load(Ordering::Acquire)).generation();
        header.free_records.store(r.free_next.load(Ordering::Acquire), Ordering::Release);
        crash_point!("create.taken");
        let words = name_words(name.as_bytes());
        r.name_len.store(name.len() as u32, Ordering::Relaxed);
        for (slot, word) in r.name.iter().zip(&words) {
            slot.store(*word, Ordering::Relaxed);
        }
        for list in [&r.holds, &r.queue_head, &r.queue_tail, &r.users, &r.free_next] {
            list.store(0, Ordering::Relaxed);
        }
        r.capacity.store(capacity, Ordering::Relaxed);
        r.available.store(capacity, Ordering::Relaxed);
        r.last_token.fetch_max(header.token_floor.load(Ordering::Acquire), Ordering::AcqRel);
        crash_point!("create.written");
        r.key.store(Key::ready(generation).0, Ordering::Release);
        crash_point!("create.committed");
        self.index_insert(name, index)?;
        header.live_records.fetch_add(1, Ordering::AcqRel);
        crash_point!("create.counted");
        Ok(Found { index, generation })
    }

    /// Under the table lock: puts record `index` of `name` in the index, doubling it first
    /// if it is half full.
    fn index_insert(&self, name: &str, index: u32) -> Result<()> {
        let header = self.shm.header();
        let count = header.index_count.load(Ordering::Acquire);
        if (u64::from(count) + 1) * 2 > Index::of(&self.shm)?.slots.len() as u64 {
            self.rebuild_index(1)?;
        }
        Index::of(&self.shm)?.insert(hash(name.as_bytes()), index);
        header.index_count.fetch_add(1, Ordering::AcqRel);
        crash_point!("index.counted");
        Ok(())
    }

    /// Under the table lock: builds the index again from the records that hold a name, in
    /// new space `2^grow` times the size of the present one (at the same place if `grow`
    /// is 0), and publishes it.
    fn rebuild_index(&self, grow: u32) -> Result<()> {
        let _op = crate::crash::op("index");
        let shm = &self.shm;
        let header = shm.header();
        let live: Vec<(u32, String)> = (0..shm.records())
            .filter_map(|i| shm.record(i).ok().map(|r| (i, r)))
            .filter(|(_, r)| Key(r.key.load(Ordering::Acquire)).is_ready())
            .map(|(i, r)| (i, name_of(r)))
            .collect();
        let log2 = match Index::of(shm) {
            Ok(index) => index.slots.len().trailing_zeros() + grow,
            Err(_) => INDEX_MIN_LOG2,
        };
        let log2 = log2.max((live.len() as u64 * 2 + 1).next_power_of_two().trailing_zeros()).max(INDEX_MIN_LOG2);
        let offset = if grow == 0 && Index::of(shm).is_ok_and(|i| i.slots.len() == 1 << log2) {
            let desc = header.index.load(Ordering::Acquire);
            let index = Index::of(shm)?;
            index.slots.iter().for_each(|s| s.store(0, Ordering::Release));
            crash_point!("index.cleared");
            desc & !(PAGE - 1)
        } else {
            self.grow_pages((8u64 << log2).max(PAGE))?
        };
        let desc = offset | u64::from(log2);
        // Filled before it is published (in new space), or after it was cleared (in place).
        let fresh = {
            let first: &AtomicU64 = shm.at(offset, "the name index")?;
            shm.at::<AtomicU64>(offset + ((8u64 << log2) - 8), "the name index")?;
            // SAFETY: as in `Index::of`: in bounds (last slot checked), aligned, atomics.
            Index { slots: unsafe { std::slice::from_raw_parts(first as *const AtomicU64, 1 << log2) } }
        };
        for (index, name) in &live {
            fresh.insert(hash(name.as_bytes()), *index);
        }
        header.index.store(desc, Ordering::Release);
        crash_point!("index.published");
        header.index_count.store(live.len() as u32, Ordering::Release);
        Ok(())
    }

    /// Under the table lock: adds the next chunk of records to the free list.
    fn grow_records(&self) -> Result<()> {
        let header = self.shm.header();
        let counted = published(&header.record_chunks, RECORD_BASE);
        header.records.fetch_max(counted, Ordering::AcqRel);
        let chunk = header.record_chunks.iter().position(|at| at.load(Ordering::Acquire) == 0).ok_or_else(|| {
            Error::new(ErrorKind::Unavailable, "the namespace has as many names as its layout can hold")
        })?;
        let items = chunk_items(chunk, RECORD_BASE);
        let at = self.grow_pages(u64::from(items) * size_of::<Record>() as u64)?;
        header.record_chunks[chunk].store(at, Ordering::Release);
        crash_point!("records.published");
        header.records.store(counted + items, Ordering::Release);
        crash_point!("records.counted");
        self.rebuild_free_list()
    }

    /// Under the table lock: reclaims every name that no live process has open, holds or
    /// waits for. Returns how many.
    pub(crate) fn sweep(&self) -> Result<u32> {
        let _op = crate::crash::op("reclaim");
        let shm = &self.shm;
        let header = shm.header();
        let mut reclaimed = 0;
        for index in 0..shm.records() {
            let r = shm.record(index)?;
            let key = Key(r.key.load(Ordering::Acquire));
            if !key.is_ready() {
                continue;
            }
            let rec = Rec::new(shm, index, key.generation())?;
            if !rec.looks_idle() {
                continue;
            }
            let mut locked = rec.lock()?;
            locked.repair()?;
            if !locked.is_unused() {
                continue;
            }
            header.token_floor.fetch_max(r.last_token.load(Ordering::Acquire), Ordering::AcqRel);
            crash_point!("reclaim.floor");
            r.key.store(Key::free(key.generation().wrapping_add(1)).0, Ordering::Release);
            crash_point!("reclaim.committed");
            drop(locked);
            let index_region = Index::of(shm)?;
            let h = hash(name_of(r).as_bytes());
            if let Some((slot, _)) = index_region.candidates(h).find(|&(_, record)| record == index) {
                index_region.remove(slot);
                header.index_count.fetch_sub(1, Ordering::AcqRel);
            }
            r.free_next.store(header.free_records.load(Ordering::Acquire), Ordering::Release);
            header.free_records.store(index + 1, Ordering::Release);
            crash_point!("reclaim.freed");
            header.live_records.fetch_sub(1, Ordering::AcqRel);
            reclaimed += 1;
        }
        header.swept_at.store(header.live_records.load(Ordering::Acquire), Ordering::Release);
        Ok(reclaimed)
    }

    /// After the table lock's owner died: rebuilds the index, the free list and the count
    /// of names from the records' keys.
    fn rebuild_table(&self) -> Result<()> {
        let _op = crate::crash::op("rebuild_table");
        let header = self.shm.header();
        header.records.fetch_max(published(&header.record_chunks, RECORD_BASE), Ordering::AcqRel);
        self.rebuild_index(0)?;
        self.rebuild_free_list()?;
        header.live_records.store(header.index_count.load(Ordering::Acquire), Ordering::Release);
        Ok(())
    }

    /// Under the table lock: chains every record without a name into the free list.
    fn rebuild_free_list(&self) -> Result<()> {
        let shm = &self.shm;
        let mut next = 0;
        for index in (0..shm.records()).rev() {
            let r = shm.record(index)?;
            if !Key(r.key.load(Ordering::Acquire)).is_ready() {
                r.free_next.store(next, Ordering::Release);
                next = index + 1;
            }
        }
        crash_point!("free_list.linked");
        shm.header().free_records.store(next, Ordering::Release);
        crash_point!("free_list.published");
        Ok(())
    }

    /// Every record that holds a name, with its index and generation.
    pub(crate) fn names(&self) -> impl Iterator<Item = Found> + '_ {
        (0..self.shm.records()).filter_map(|index| {
            let key = Key(self.shm.record(index).ok()?.key.load(Ordering::Acquire));
            key.is_ready().then_some(Found { index, generation: key.generation() })
        })
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn hashes_and_names_round_trip() {
        assert_ne!(hash(b"a"), hash(b"b"));
        let words = name_words(b"jobs/nightly");
        assert_eq!(words[0].to_le_bytes(), *b"jobs/nig");
        assert_eq!(&words[1].to_le_bytes()[..4], b"htly");
    }
}
