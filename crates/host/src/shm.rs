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
    /// This process's slot, once claimed ([`NO_SLOT`] before).
    me: std::sync::atomic::AtomicU32,
    registration: Option<Registration>,
}

// SAFETY: the mapping is only accessed through atomics (see `layout`), and lives as long
// as the `Shm`.
unsafe impl Send for Shm {}
// SAFETY: as for `Send`.
unsafe impl Sync for Shm {}

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
            registration: Some(registration),
        }
    }

    /// Records the process slot this process has claimed.
    pub(crate) fn set_me(&self, slot: u32) {
        self.me.store(slot, std::sync::atomic::Ordering::Relaxed);
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
        self.header().slots.load(Ordering::Acquire)
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
        self.header().records.load(Ordering::Acquire)
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
        self.at(start + u64::from(index) * size_of::<T>() as u64, what)
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
}

impl Drop for Shm {
    fn drop(&mut self) {
        // Under the gate: a fork meanwhile would otherwise copy descriptors and a mapping
        // the fork handler no longer knows of (and keep our liveness lock alive).
        let gate = sys::maps::gate();
        // SAFETY: the mapping made for this Shm; nothing uses it after the Shm is dropped.
        unsafe { sys::maps::unmap(self.base, self.mapped) };
        // Closing the file drops the liveness lock; the directory's BSD lock goes with it.
        // SAFETY: dropped once, here; neither is used after.
        unsafe {
            ManuallyDrop::drop(&mut self.file);
            ManuallyDrop::drop(&mut self.dir);
        }
        if let Some(registration) = self.registration.take() {
            sys::maps::unregister(&gate, registration);
        }
    }
}
