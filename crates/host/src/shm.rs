//! The namespace file as the protocol sees it: typed, bounds-checked access to the
//! mapped memory, and whether a process slot's owner is alive.
//!
//! An [`Shm`] owns the namespace's descriptors and mapping (see `sys::maps` for why a
//! fork or a bus error must know them). Every reference into the mapping is checked
//! against the file's length as the header gives it and against the mapping, so a
//! corrupted file gives a `Corrupted` error, never an access out of bounds.

use std::fs::File;
use std::mem::{align_of, size_of, ManuallyDrop};
use std::os::fd::{AsFd, OwnedFd};
use std::ptr::NonNull;

use latchkey_model::{Error, ErrorKind, Result};

use crate::layout::*;
use crate::sync::atomic::Ordering;
use crate::sys;
use crate::sys::maps::Registration;

/// `Shm::me` until a process slot is claimed.
pub(crate) const NO_SLOT: u32 = u32::MAX;

/// The mapped namespace file.
pub(crate) struct Shm {
    base: NonNull<u8>,
    /// Bytes mapped: a reservation larger than the file, which grows into it.
    mapped: usize,
    /// Closed by hand in `Drop`, under the fork gate.
    file: ManuallyDrop<File>,
    dir: ManuallyDrop<OwnedFd>,
    /// This process's slot, once claimed ([`NO_SLOT`] before)...
    me: std::sync::atomic::AtomicU32,
    /// ...and its owner value in lock words (see [`Owner`]).
    owner: std::sync::atomic::AtomicU32,
    registration: Option<Registration>,
}

// SAFETY: the mapping is only accessed through atomics (see `layout`), and lives as long
// as the `Shm`.
unsafe impl Send for Shm {}
// SAFETY: as for `Send`.
unsafe impl Sync for Shm {}

/// Items in the chunks published in a directory, up to the first missing one: a bound for
/// a count that a corrupted header could make huge.
pub(crate) fn published(directory: &[crate::sync::atomic::AtomicU64; DIRECTORY], base: u32) -> u32 {
    directory
        .iter()
        .take_while(|at| at.load(Ordering::Acquire) != 0)
        .enumerate()
        .map(|(i, _)| chunk_items(i, base))
        .fold(0u32, u32::saturating_add)
}

/// The error for a file whose contents no latchkey wrote.
#[cold]
#[inline(never)]
pub(crate) fn corrupted(what: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::Corrupted, format!("the namespace file is corrupted: {what}"))
}

impl Shm {
    /// Takes over `file` (open, at least a header long), the directory `dir` that holds
    /// it, and `mapped` bytes of it mapped at `base`, registered as `registration`.
    pub(crate) fn new(file: File, dir: OwnedFd, base: NonNull<u8>, mapped: usize, registration: Registration) -> Shm {
        Shm {
            base,
            mapped,
            file: ManuallyDrop::new(file),
            dir: ManuallyDrop::new(dir),
            me: std::sync::atomic::AtomicU32::new(NO_SLOT),
            owner: std::sync::atomic::AtomicU32::new(0),
            registration: Some(registration),
        }
    }

    /// Records the process slot this process has claimed.
    pub(crate) fn set_me(&self, slot: u32) {
        self.me.store(slot, std::sync::atomic::Ordering::Relaxed);
        self.set_incarnation(0);
    }

    /// This process's slot.
    #[inline]
    pub(crate) fn me(&self) -> u32 {
        self.me.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    pub(crate) fn registration(&self) -> &Registration {
        self.registration.as_ref().expect("registered until dropped")
    }

    /// Whether the namespace was lost: its mapping cut short, or its file deleted or
    /// replaced (see `namespace::identity`).
    #[inline]
    pub(crate) fn is_lost(&self) -> bool {
        self.registration().is_lost()
    }

    /// The bytes mapped.
    pub(crate) fn mapped(&self) -> usize {
        self.mapped
    }

    /// The header, always in bounds.
    #[inline]
    pub(crate) fn header(&self) -> &Header {
        // SAFETY: the mapping is at least a page (checked when the file was opened), starts
        // with the Header, is page-aligned and made of atomics.
        unsafe { &*self.base.as_ptr().cast::<Header>() }
    }

    /// The bytes of the file in use, as far as they are mapped.
    #[inline]
    pub(crate) fn len(&self) -> u64 {
        self.header().file_len.load(Ordering::Acquire).min(self.mapped as u64)
    }

    /// The `T` at `offset`: in bounds and aligned, or a `Corrupted` error.
    #[inline]
    pub(crate) fn at<T>(&self, offset: u64, what: &str) -> Result<&T> {
        let end = offset.checked_add(size_of::<T>() as u64);
        if end.is_none_or(|end| end > self.len()) || offset % align_of::<T>() as u64 != 0 {
            return Err(corrupted(format_args!("{what} at offset {offset} lies outside the file")));
        }
        // SAFETY: in bounds of the mapping (checked above), aligned, and every layout type
        // is made of atomics, for which any bit pattern is a valid value.
        Ok(unsafe { &*self.base.as_ptr().add(offset as usize).cast::<T>() })
    }

    /// Process slot `n`.
    pub(crate) fn slot(&self, n: u32) -> Result<&ProcSlot> {
        let header = self.header();
        if n >= header.slots.load(Ordering::Acquire) {
            return Err(corrupted(format_args!("process slot {n} does not exist")));
        }
        self.item(&header.slot_chunks, SLOT_BASE, n, "a process slot")
    }

    /// Process slots allocated so far.
    pub(crate) fn slots(&self) -> u32 {
        let header = self.header();
        header.slots.load(Ordering::Acquire).min(published(&header.slot_chunks, SLOT_BASE))
    }

    /// Record `n`.
    pub(crate) fn record(&self, n: u32) -> Result<&Record> {
        let header = self.header();
        if n >= header.records.load(Ordering::Acquire) {
            return Err(corrupted(format_args!("record {n} does not exist")));
        }
        self.item(&header.record_chunks, RECORD_BASE, n, "a record")
    }

    /// Records allocated so far.
    pub(crate) fn records(&self) -> u32 {
        let header = self.header();
        header.records.load(Ordering::Acquire).min(published(&header.record_chunks, RECORD_BASE))
    }

    fn item<T>(
        &self,
        directory: &[crate::sync::atomic::AtomicU64; DIRECTORY],
        base: u32,
        n: u32,
        what: &str,
    ) -> Result<&T> {
        let (chunk, index) = locate(n, base);
        let start = directory.get(chunk).map_or(0, |c| c.load(Ordering::Acquire));
        if start == 0 {
            return Err(corrupted(format_args!("{what} chunk {chunk} is missing")));
        }
        let offset = (u64::from(index) * size_of::<T>() as u64).checked_add(start);
        self.at(offset.ok_or_else(|| corrupted(format_args!("{what} lies outside the file")))?, what)
    }

    /// The entry a reference names (its offset / [`ENTRY_SIZE`]; never a chunk header).
    #[inline]
    pub(crate) fn entry(&self, reference: u32) -> Result<&Entry> {
        let offset = u64::from(reference) * ENTRY_SIZE;
        if reference == 0 || offset % ENTRY_CHUNK == 0 {
            return Err(corrupted(format_args!("entry reference {reference} names no entry")));
        }
        self.at(offset, "an entry")
    }

    /// The header of the entry chunk whose header's reference is `reference`.
    pub(crate) fn chunk(&self, reference: u32) -> Result<&ChunkHeader> {
        let offset = u64::from(reference) * ENTRY_SIZE;
        if reference == 0 || offset % ENTRY_CHUNK != 0 {
            return Err(corrupted(format_args!("chunk reference {reference} names no chunk")));
        }
        self.at(offset, "an entry chunk")
    }

    /// The most entries (or chunks) the file can hold: a bound for every walk of a list.
    pub(crate) fn max_entries(&self) -> u64 {
        self.len() / ENTRY_SIZE
    }

    /// The chunks of `slot`'s arena, first to last (headers' references).
    pub(crate) fn arena_chunks(&self, slot: u32) -> Result<Vec<u32>> {
        let mut chunks = Vec::new();
        let mut next = self.slot(slot)?.arena.load(Ordering::Acquire);
        while next != 0 {
            if chunks.len() as u64 > self.max_entries() / (ENTRY_CHUNK / ENTRY_SIZE) {
                return Err(corrupted(format_args!("the arena of process slot {slot} loops")));
            }
            chunks.push(next);
            next = self.chunk(next)?.next.load(Ordering::Acquire);
        }
        Ok(chunks)
    }

    /// Every entry of `slot`'s arena, with its reference.
    pub(crate) fn arena_entries(&self, slot: u32) -> Result<Vec<(u32, &Entry)>> {
        let per_chunk = (ENTRY_CHUNK / ENTRY_SIZE) as u32;
        let mut entries = Vec::new();
        for chunk in self.arena_chunks(slot)? {
            for reference in chunk + 1..chunk + per_chunk {
                entries.push((reference, self.entry(reference)?));
            }
        }
        Ok(entries)
    }

    /// Whether the process in `slot` is alive: it holds its liveness lock. Ours is.
    pub(crate) fn is_alive(&self, slot: u32) -> bool {
        slot == self.me()
            || sys::lock::locked_by_other(self.file.as_fd(), LIVENESS_OFFSET + u64::from(slot), 1).unwrap_or(true)
    }

    /// This process as the owner of a lock word: its slot and incarnation.
    #[inline]
    pub(crate) fn owner(&self) -> u32 {
        self.owner.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Records the incarnation of this process's slot (see [`Owner`]).
    pub(crate) fn set_incarnation(&self, incarnation: u32) {
        let owner = Owner::new(self.me(), incarnation);
        self.owner.store(owner.0, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether the owner of a lock word is alive: its slot's process is, and is the
    /// incarnation that took the lock. (A word naming no slot has no live owner.)
    pub(crate) fn owner_alive(&self, owner: Owner) -> bool {
        let Some(slot) = owner.slot() else { return false };
        if slot == self.me() {
            return owner.0 == self.owner() & !LOCK_CONTENDED;
        }
        // A slot not in the table yet is the one a process is adding it for: its
        // incarnation is the grower's (see `namespace::slots`).
        let incarnation = match self.slot(slot) {
            Ok(s) => s.incarnation.load(Ordering::Acquire),
            Err(_) => self.header().slot_grower.load(Ordering::Acquire),
        };
        owner.is_incarnation(incarnation) && self.is_alive(slot)
    }
}

impl Drop for Shm {
    fn drop(&mut self) {
        // Under the gate: a fork meanwhile would otherwise copy descriptors and a mapping
        // the fork handler no longer knows of (and keep our liveness lock alive).
        let gate = sys::maps::gate();
        // Forgotten first: once unmapped, the address may be another mapping's, which the
        // bus-error handler must not take for ours.
        if let Some(registration) = self.registration.take() {
            sys::maps::unregister(&gate, registration);
        }
        // SAFETY: the mapping made for this Shm; nothing uses it after the Shm is dropped.
        unsafe { sys::maps::unmap(self.base, self.mapped) };
        // Closing the file drops the liveness lock; the directory's BSD lock goes with it.
        // SAFETY: dropped once, here; neither is used after.
        unsafe {
            ManuallyDrop::drop(&mut self.file);
            ManuallyDrop::drop(&mut self.dir);
        }
    }
}
