//! The namespace as the protocol sees it, for loom (`--cfg loom`): the same interface as
//! `shm.rs`, over structures on the heap made of loom's atomics. Each loom thread plays a
//! process of its own (its slot is set with [`Shm::enter`]), and a process can die:
//! [`Shm::die`] makes its slot dead, so that the others take over what it held.

use latchkey_model::{Error, ErrorKind, Result};

use crate::layout::*;
use crate::sync::atomic::{AtomicU32, AtomicU64};

loom::thread_local! {
    static SLOT: std::cell::Cell<u32> = std::cell::Cell::new(0);
}

/// The error for a file whose contents no latchkey wrote.
pub(crate) fn corrupted(what: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::Corrupted, format!("the namespace file is corrupted: {what}"))
}

/// Entries per process in the model: one chunk (the reference of slot `s`'s chunk header is
/// `(s + 1) × 64`, its entries follow).
const PER_SLOT: u32 = (ENTRY_CHUNK / ENTRY_SIZE) as u32;

/// A namespace of a few process slots and records, on the heap.
pub(crate) struct Shm {
    records: Vec<Record>,
    slots: Vec<ProcSlot>,
    entries: Vec<Entry>,
    dead: Vec<AtomicU32>,
    registration: Registration,
}

/// The part of a registration the protocol uses: the alarm word.
pub(crate) struct Registration {
    alarm: AtomicU32,
}

impl Registration {
    pub(crate) fn alarm(&self) -> &AtomicU32 {
        &self.alarm
    }
}

impl Shm {
    /// A namespace of `slots` processes and `records` records, each record holding a name
    /// (generation 0) of `capacity` permits.
    pub(crate) fn model(slots: u32, records: u32, capacity: u32) -> Shm {
        let records = (0..records)
            .map(|_| {
                let r = record();
                r.key.store(Key::ready(0).0, std::sync::atomic::Ordering::Relaxed);
                r.capacity.store(capacity, std::sync::atomic::Ordering::Relaxed);
                r.available.store(capacity, std::sync::atomic::Ordering::Relaxed);
                r
            })
            .collect();
        let slots_v = (0..slots).map(|_| proc_slot()).collect();
        let entries = (0..(slots + 1) * PER_SLOT).map(|_| entry()).collect();
        let dead = (0..slots).map(|_| AtomicU32::new(0)).collect();
        let shm =
            Shm { records, slots: slots_v, entries, dead, registration: Registration { alarm: AtomicU32::new(0) } };
        for slot in 0..slots {
            for at in shm.arena(slot) {
                shm.entries[at as usize].owner.store(slot, std::sync::atomic::Ordering::Relaxed);
            }
        }
        shm
    }

    /// Makes this loom thread the process in `slot`.
    pub(crate) fn enter(&self, slot: u32) {
        SLOT.with(|s| s.set(slot));
    }

    /// The process in `slot` dies: its liveness lock is free from now on, and every
    /// sleeper wakes to look again (as the watcher of a real process, or the record lock's
    /// periodic check, makes it do).
    pub(crate) fn die(&self, slot: u32) {
        self.dead[slot as usize].store(1, std::sync::atomic::Ordering::SeqCst);
        self.registration.alarm.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        crate::sys::futex::wake_all(&self.registration.alarm);
    }

    /// The entry references of `slot`'s arena.
    pub(crate) fn arena(&self, slot: u32) -> impl Iterator<Item = u32> {
        let chunk = (slot + 1) * PER_SLOT;
        chunk + 1..chunk + PER_SLOT
    }

    pub(crate) fn me(&self) -> u32 {
        SLOT.with(|s| s.get())
    }

    pub(crate) fn is_lost(&self) -> bool {
        false
    }

    pub(crate) fn registration(&self) -> &Registration {
        &self.registration
    }

    pub(crate) fn owner(&self) -> u32 {
        Owner::new(self.me(), 0).0
    }

    pub(crate) fn owner_alive(&self, owner: Owner) -> bool {
        owner.slot().is_some_and(|slot| self.is_alive(slot))
    }

    pub(crate) fn is_alive(&self, slot: u32) -> bool {
        self.dead.get(slot as usize).is_some_and(|d| d.load(std::sync::atomic::Ordering::SeqCst) == 0)
    }

    pub(crate) fn record(&self, n: u32) -> Result<&Record> {
        self.records.get(n as usize).ok_or_else(|| corrupted(format_args!("record {n} does not exist")))
    }

    pub(crate) fn slot(&self, n: u32) -> Result<&ProcSlot> {
        self.slots.get(n as usize).ok_or_else(|| corrupted(format_args!("process slot {n} does not exist")))
    }

    pub(crate) fn slots(&self) -> u32 {
        self.slots.len() as u32
    }

    pub(crate) fn entry(&self, at: u32) -> Result<&Entry> {
        if at % PER_SLOT == 0 {
            return Err(corrupted(format_args!("entry reference {at} names no entry")));
        }
        self.entries.get(at as usize).ok_or_else(|| corrupted(format_args!("entry {at} lies outside the file")))
    }

    pub(crate) fn max_entries(&self) -> u64 {
        self.entries.len() as u64
    }

    pub(crate) fn arena_entries(&self, slot: u32) -> Result<Vec<(u32, &Entry)>> {
        self.arena(slot).map(|at| Ok((at, self.entry(at)?))).collect()
    }
}

fn record() -> Record {
    Record {
        key: AtomicU64::new(0),
        last_token: AtomicU64::new(0),
        next_ticket: AtomicU64::new(0),
        lock: AtomicU32::new(0),
        capacity: AtomicU32::new(0),
        available: AtomicU32::new(0),
        name_len: AtomicU32::new(0),
        holds: AtomicU32::new(0),
        queue_head: AtomicU32::new(0),
        queue_tail: AtomicU32::new(0),
        users: AtomicU32::new(0),
        free_next: AtomicU32::new(0),
        _reserved: AtomicU32::new(0),
        name: std::array::from_fn(|_| AtomicU64::new(0)),
    }
}

fn proc_slot() -> ProcSlot {
    ProcSlot {
        pid: AtomicU32::new(0),
        pid_ns: AtomicU32::new(0),
        since_ns: AtomicU64::new(0),
        in_use: AtomicU32::new(1),
        doorbell: AtomicU32::new(0),
        arena: AtomicU32::new(0),
        incarnation: AtomicU32::new(0),
        claimers: AtomicU32::new(0),
        _reserved: std::array::from_fn(|_| AtomicU32::new(0)),
    }
}

fn entry() -> Entry {
    Entry {
        state: AtomicU32::new(0),
        owner: AtomicU32::new(0),
        record: AtomicU32::new(0),
        generation: AtomicU32::new(0),
        permits: AtomicU32::new(0),
        word: AtomicU32::new(0),
        next: AtomicU32::new(0),
        prev: AtomicU32::new(0),
        order: AtomicU64::new(0),
        since_ns: AtomicU64::new(0),
        _reserved: std::array::from_fn(|_| AtomicU64::new(0)),
    }
}
