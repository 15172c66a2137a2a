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
pub(crate) const VERSION: u32 = 2;

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
    /// Taken to add a name to the table or to reclaim names (a `word_lock`).
    pub table_lock: AtomicU32,
    pub _reserved: AtomicU32,
    /// At least the last token of every name reclaimed so far: a name created again
    /// starts above it, so its tokens keep increasing.
    pub token_floor: AtomicU64,
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
    /// Whether the record holds a name: see [`Key`].
    pub key: AtomicU64,
    pub name_len: AtomicU32,
    pub capacity: AtomicU32,
    /// The record lock (a `word_lock`).
    pub lock: AtomicU32,
    /// Bumped when a waiter slot is freed: requests that found the queue full sleep on
    /// it (see `wait`), and `room_sleepers` counts them.
    pub room: AtomicU32,
    pub state: AtomicU64,
    /// The token of the latest grant of this name; it outlives every process.
    pub last_token: AtomicU64,
    /// The next waiter's ticket (under the record lock).
    pub next_ticket: AtomicU64,
    pub room_sleepers: AtomicU32,
    pub _reserved: AtomicU32,
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

/// A record's `key` word, which says whether the record holds a name.
///
/// | bits   | meaning                                                            |
/// |--------|--------------------------------------------------------------------|
/// | 0..8   | the [`KeyState`]                                                    |
/// | 8..32  | while `Reclaiming`: the reclaiming process's slot + 1              |
/// | 32..64 | generation, bumped when the name is reclaimed: a lookup that saw the record before can tell it was reused |
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Key(pub u64);

/// What a record holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KeyState {
    /// Never held a name: a lookup that gets here stops.
    Empty,
    /// Holds a name, fixed while it stays `Ready`.
    Ready,
    /// Being checked for reclaiming, under the table lock: wait.
    Reclaiming,
    /// Held a name that was reclaimed: a lookup goes on past it.
    Tomb,
}

impl Key {
    pub(crate) fn new(state: KeyState, owner: u32, generation: u32) -> Key {
        let state = match state {
            KeyState::Empty => 0,
            KeyState::Ready => 2,
            KeyState::Reclaiming => 3,
            KeyState::Tomb => 4,
        };
        Key(state | u64::from(owner & 0xff_ffff) << 8 | u64::from(generation) << 32)
    }

    /// The state; `None` for a value no latchkey writes (a corrupted file).
    pub(crate) fn state(self) -> Option<KeyState> {
        match self.0 & 0xff {
            0 => Some(KeyState::Empty),
            2 => Some(KeyState::Ready),
            3 => Some(KeyState::Reclaiming),
            4 => Some(KeyState::Tomb),
            _ => None,
        }
    }

    pub(crate) fn owner(self) -> u32 {
        (self.0 >> 8) as u32 & 0xff_ffff
    }

    pub(crate) fn generation(self) -> u32 {
        (self.0 >> 32) as u32
    }
}

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
