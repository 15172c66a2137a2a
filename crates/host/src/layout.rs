//! The layout of a namespace file, shared by every process that maps it.
//!
//! ```text
//! offset 0                 Header (one page)
//! PROCS_OFFSET             ProcSlot × PROC_SLOTS     who takes part, and their pids
//! RECORDS_OFFSET           Record × RECORDS          one per name, never moved
//! ```
//!
//! Every field is an atomic, so any process may read any field at any time. A
//! process's liveness is not in the file: it holds an open-file-description lock on byte
//! `LIVENESS_OFFSET + slot` for as long as it lives, and the kernel drops that lock when it
//! dies, however it dies (see `sys`).

use std::mem::size_of;
use std::sync::atomic::{AtomicU32, AtomicU64};

/// `b"LATCHKEY"`, little-endian: the first word of every namespace file.
pub(crate) const MAGIC: u64 = u64::from_le_bytes(*b"LATCHKEY");
/// The layout version; a file of another version is refused, not reinterpreted.
pub(crate) const VERSION: u32 = 1;

/// Processes that can take part at once.
pub(crate) const PROC_SLOTS: usize = 256;
/// Names a namespace can hold.
pub(crate) const RECORDS: usize = 4096;
/// Holders of one name at once (each may hold several permits).
pub(crate) const HOLDERS: usize = 32;
/// Waiters queued on one name at once.
pub(crate) const WAITERS: usize = 32;
/// The longest name, in bytes.
pub(crate) const NAME_WORDS: usize = 32;

pub(crate) const PAGE: usize = 4096;
pub(crate) const PROCS_OFFSET: usize = PAGE;
pub(crate) const RECORDS_OFFSET: usize = PROCS_OFFSET + PROC_SLOTS * size_of::<ProcSlot>();
pub(crate) const FILE_SIZE: usize = RECORDS_OFFSET + RECORDS * size_of::<Record>();
/// Byte 0 is locked while the file is being initialized.
pub(crate) const INIT_LOCK_OFFSET: u64 = 0;
/// Byte `LIVENESS_OFFSET + slot` is locked by the process in `slot` while it lives.
/// (Byte-range locks need not lie inside the file.)
pub(crate) const LIVENESS_OFFSET: u64 = 1 << 40;

/// The first page of the file.
#[repr(C)]
pub(crate) struct Header {
    /// [`MAGIC`], written last when the file is initialized.
    pub magic: AtomicU64,
    pub version: AtomicU32,
    pub proc_slots: AtomicU32,
    pub records: AtomicU32,
    pub record_size: AtomicU32,
    pub file_size: AtomicU64,
}

/// A process that takes part in the namespace.
#[repr(C)]
pub(crate) struct ProcSlot {
    /// The pid, for `inspect`; liveness comes from the slot's byte lock, never from the pid.
    pub pid: AtomicU32,
    /// The process's pid namespace (see `sys::pid_namespace`): where `pid` is valid.
    pub pid_ns: AtomicU32,
    /// When the process took the slot (monotonic ns).
    pub since_ns: AtomicU64,
}

/// One name: its semaphore, its holders, its queue.
///
/// # The state word
///
/// | bits   | meaning                                                         |
/// |--------|-----------------------------------------------------------------|
/// | 0..31  | permits available                                               |
/// | 31     | `QUEUED`: waiters exist; only the record lock's holder changes the word |
/// | 32..64 | holder mask: bit `32 + i` set while `holders[i]` holds permits  |
///
/// A grant claims a free holder slot (its `owner`) before the compare-and-swap that
/// takes the permits and sets the slot's bit, so after a crash the bit alone tells whether
/// the dead process held the permits.
#[repr(C)]
pub(crate) struct Record {
    /// [`KEY_EMPTY`], [`KEY_CLAIMING`] or [`KEY_READY`]; the name is fixed once ready.
    pub key: AtomicU32,
    pub name_len: AtomicU32,
    pub capacity: AtomicU32,
    /// The record lock: 0 when free, else the locking process's slot + 1, with
    /// [`LOCK_CONTENDED`] set when someone sleeps on it.
    pub lock: AtomicU32,
    pub state: AtomicU64,
    /// The token of the latest grant of this name; it outlives every process.
    pub last_token: AtomicU64,
    /// The next waiter's ticket (under the record lock).
    pub next_ticket: AtomicU64,
    pub name: [AtomicU64; NAME_WORDS],
    /// Bit `slot` set while the process in `slot` has the name open; the capacity of a
    /// name open in a live process cannot change.
    pub users: [AtomicU64; PROC_SLOTS / 64],
    pub holders: [Holder; HOLDERS],
    pub waiters: [Waiter; WAITERS],
}

/// One holder of a name.
#[repr(C)]
pub(crate) struct Holder {
    /// The holding process's slot + 1, or 0 when free.
    pub owner: AtomicU32,
    pub permits: AtomicU32,
    pub token: AtomicU64,
    pub since_ns: AtomicU64,
}

/// One queued request.
#[repr(C)]
pub(crate) struct Waiter {
    /// The waiting process's slot + 1, or 0 when free.
    pub owner: AtomicU32,
    pub permits: AtomicU32,
    /// Arrival order; grants follow it.
    pub ticket: AtomicU64,
    /// How the grant reaches the waiter, who sleeps on it: see `grant_word`.
    pub granted: AtomicU32,
    pub _reserved: AtomicU32,
}

pub(crate) const KEY_EMPTY: u32 = 0;
pub(crate) const KEY_CLAIMING: u32 = 1;
pub(crate) const KEY_READY: u32 = 2;

pub(crate) const AVAILABLE: u64 = (1 << 31) - 1;
pub(crate) const QUEUED: u64 = 1 << 31;
pub(crate) const HOLDER_SHIFT: u32 = 32;
pub(crate) const LOCK_CONTENDED: u32 = 1 << 31;

pub(crate) fn available(state: u64) -> u32 {
    (state & AVAILABLE) as u32
}

pub(crate) fn holder_mask(state: u64) -> u32 {
    (state >> HOLDER_SHIFT) as u32
}

pub(crate) fn holder_bit(index: usize) -> u64 {
    1 << (HOLDER_SHIFT + index as u32)
}

const _: () = assert!(HOLDERS == 32, "the holder mask is the state word's upper half");
const _: () = assert!(size_of::<Header>() <= PAGE);
const _: () = assert!(size_of::<Record>() % 8 == 0);
