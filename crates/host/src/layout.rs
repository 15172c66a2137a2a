//! The layout of a namespace file, shared by every process that maps it.
//!
//! ```text
//! offset 0      Header (one page): geometry, locks, token floor, chunk directories
//! anywhere      chunks, allocated by growing the file (`namespace::grow`):
//!                 process slots   ProcSlot × (SLOT_BASE << i)     for chunk i
//!                 records         Record × (RECORD_BASE << i)     for chunk i
//!                 the name index  u64 × 2^k                        (see `table`)
//!                 entry chunks    ChunkHeader + Entry × 63         one process's arena
//! ```
//!
//! Every field is an atomic, so any process may read any field at any time, and any
//! bounds-checked, aligned offset may be read as any of these types without undefined
//! behaviour (a corrupted file gives wrong values, never unsound memory accesses).
//!
//! A process's liveness is not in the file: it holds an open-file-description lock on
//! byte `LIVENESS_OFFSET + slot` for as long as it lives, and the kernel drops that lock
//! when it dies, however it dies (see `sys::lock`).
//!
//! The truth of the lock state is in the **entries**: each process keeps, in its own
//! arena, one entry per hold, per queued request and per name it has open. Everything in
//! a [`Record`] besides its name, capacity and counters of tokens and tickets is derived
//! from those entries, and rebuilt from them after a process died in the middle of a
//! change (see `protocol::rebuild`).

use std::mem::size_of;

use crate::sync::atomic::{AtomicU32, AtomicU64};

/// `b"LATCHKEY"`, little-endian: the first word of every namespace file.
pub(crate) const MAGIC: u64 = u64::from_le_bytes(*b"LATCHKEY");
/// The layout version; a file of another version is refused, not reinterpreted.
pub(crate) const VERSION: u32 = 3;

pub(crate) const PAGE: u64 = 4096;
/// Process slots in the first slot chunk; chunk `i` holds `SLOT_BASE << i`.
pub(crate) const SLOT_BASE: u32 = 8;
/// Records in the first record chunk; chunk `i` holds `RECORD_BASE << i`.
pub(crate) const RECORD_BASE: u32 = 64;
/// Chunks a directory can name: `BASE × (2^DIRECTORY − 1)` items, far beyond what memory allows.
pub(crate) const DIRECTORY: usize = 20;
/// Bytes of an entry, and of the header of an entry chunk.
pub(crate) const ENTRY_SIZE: u64 = 64;
/// Bytes of an entry chunk: its header and 63 entries.
pub(crate) const ENTRY_CHUNK: u64 = 4096;
/// The fewest slots of the name index.
pub(crate) const INDEX_MIN_LOG2: u32 = 9;
/// The longest name, in 8-byte words.
pub(crate) const NAME_WORDS: usize = 32;

/// Byte `LIVENESS_OFFSET + slot` is locked by the process in `slot` while it lives.
/// (Byte-range locks need not lie inside the file.)
pub(crate) const LIVENESS_OFFSET: u64 = 1 << 40;

/// The first page of the file.
#[repr(C)]
pub(crate) struct Header {
    /// [`MAGIC`]. A file is made complete under another name and then linked into place,
    /// so a file at the namespace path always has it.
    pub magic: AtomicU64,
    pub version: AtomicU32,
    /// `size_of::<Record>()`, `size_of::<ProcSlot>()`, [`ENTRY_SIZE`]: checked when the
    /// file is opened, like the geometry below.
    pub record_size: AtomicU32,
    pub slot_size: AtomicU32,
    pub entry_size: AtomicU32,
    /// [`SLOT_BASE`] and [`RECORD_BASE`]: the geometry of the chunk directories.
    pub slot_base: AtomicU32,
    pub record_base: AtomicU32,
    pub _geometry: AtomicU32,
    /// Bytes of the file in use (allocated and reserved on disk); grows, never shrinks.
    pub file_len: AtomicU64,
    /// Tokens of new names start above it: the wall clock (ns) when the file was made,
    /// raised to the last token of every name reclaimed since. So tokens keep increasing
    /// for a name reclaimed and made again, and for a namespace deleted and made again.
    pub token_floor: AtomicU64,
    /// When the file was made (wall clock, ns), for `status`.
    pub created_ns: AtomicU64,
    /// Taken to grow the file (a `protocol::lock` word lock).
    pub grow_lock: AtomicU32,
    /// Taken to add, find under lock, or reclaim names, and to change the index.
    pub table_lock: AtomicU32,
    /// Process slots allocated (published chunks).
    pub slots: AtomicU32,
    /// Records allocated (published chunks).
    pub records: AtomicU32,
    /// The first record on the free list, + 1 (0: none). Under the table lock.
    pub free_records: AtomicU32,
    /// Records that hold a name. Under the table lock.
    pub live_records: AtomicU32,
    /// `live_records` after the last sweep: the next sweep comes once the table has doubled.
    pub swept_at: AtomicU32,
    /// Names in the index. Under the table lock.
    pub index_count: AtomicU32,
    /// The name index: its offset (a multiple of [`PAGE`]) | log2 of its slots.
    pub index: AtomicU64,
    /// Where the next process starts looking for a free slot.
    pub slot_hint: AtomicU32,
    /// The incarnation of the latest process to grow the slot table (see `namespace::slots`).
    pub slot_grower: AtomicU32,
    /// Offsets of the process slot chunks (0: not yet allocated).
    pub slot_chunks: [AtomicU64; DIRECTORY],
    /// Offsets of the record chunks (0: not yet allocated).
    pub record_chunks: [AtomicU64; DIRECTORY],
    /// Processes adding a chunk of process slots, from before they take the liveness lock
    /// of its first slot until their pid is in it (see `namespace::slots`): while not 0,
    /// the pid in the first slot of a chunk may be a dead owner's.
    pub slot_growers: AtomicU32,
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
    /// 1 while a process has the slot: a hint for finding a free one, never trusted.
    pub in_use: AtomicU32,
    /// The process's async waits sleep on it (one thread for all of them); see [`Word`].
    pub doorbell: AtomicU32,
    /// The process's arena: the entry reference of its first chunk's header (0: none).
    pub arena: AtomicU32,
    /// Bumped each time a process takes the slot: locks name it (see [`Owner`]).
    pub incarnation: AtomicU32,
    /// Processes between trying to take the slot and writing their pid: while not 0,
    /// `pid` may still be a dead owner's although the slot is alive (see `wait::watch`).
    pub claimers: AtomicU32,
    pub _reserved: [AtomicU32; 7],
}

/// One name.
///
/// `key`, the name, `capacity`, `last_token` and `next_ticket` are its own; the rest is
/// derived from the entries that point at it, and kept under the record `lock`:
///
/// - `available` = `capacity` − the permits of every entry in `holds`;
/// - `holds`: the entries that hold permits (any order);
/// - `queue_head` … `queue_tail`: the queued requests, in ticket order (FIFO);
/// - `users`: one entry per process that has the name open.
///
/// Lists are doubly linked through the entries' `next`/`prev`; a reference is an entry's
/// offset / [`ENTRY_SIZE`], 0 for none.
#[repr(C)]
pub(crate) struct Record {
    /// What the record holds: see [`Key`].
    pub key: AtomicU64,
    /// The token of the latest grant; it outlives every process.
    pub last_token: AtomicU64,
    /// The ticket of the next request to queue.
    pub next_ticket: AtomicU64,
    /// The record lock: see `protocol::lock`.
    pub lock: AtomicU32,
    pub capacity: AtomicU32,
    pub available: AtomicU32,
    pub name_len: AtomicU32,
    pub holds: AtomicU32,
    pub queue_head: AtomicU32,
    pub queue_tail: AtomicU32,
    pub users: AtomicU32,
    /// The next record on the free list, + 1, while the record holds no name.
    pub free_next: AtomicU32,
    pub _reserved: AtomicU32,
    pub name: [AtomicU64; NAME_WORDS],
}

/// One hold, queued request or open name of one process.
#[repr(C)]
pub(crate) struct Entry {
    /// [`EntryKind`] in bits 0..8, and [`ASYNC`].
    pub state: AtomicU32,
    /// The process slot whose arena holds it.
    pub owner: AtomicU32,
    /// The record it belongs to, and that record's generation (see [`Key`]) then.
    pub record: AtomicU32,
    pub generation: AtomicU32,
    pub permits: AtomicU32,
    /// A queued request's futex word: see [`Word`].
    pub word: AtomicU32,
    pub next: AtomicU32,
    pub prev: AtomicU32,
    /// A hold's fencing token, or a queued request's ticket.
    pub order: AtomicU64,
    /// When it was granted or queued (coarse monotonic ns).
    pub since_ns: AtomicU64,
    pub _reserved: [AtomicU64; 2],
}

/// The first 64 bytes of an entry chunk.
#[repr(C)]
pub(crate) struct ChunkHeader {
    /// The process slot whose arena it is part of.
    pub owner: AtomicU32,
    /// The next chunk of the arena (the reference of its header), 0 for none.
    pub next: AtomicU32,
    pub _reserved: [AtomicU32; 14],
}

/// What an entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EntryKind {
    /// Unused: the owning process may take it.
    Free,
    /// The owner has the record open (in `users`).
    Open,
    /// A queued request (in the queue).
    Wait,
    /// Held permits (in `holds`).
    Hold,
}

/// Set in an entry's `state` when the request is waited for asynchronously: whoever
/// nudges it also rings the owner's doorbell (see `protocol::wake`).
pub(crate) const ASYNC: u32 = 1 << 8;

impl EntryKind {
    pub(crate) fn bits(self) -> u32 {
        match self {
            EntryKind::Free => 0,
            EntryKind::Open => 1,
            EntryKind::Wait => 2,
            EntryKind::Hold => 3,
        }
    }

    /// The kind of an entry's `state`; `None` for a value no latchkey writes.
    pub(crate) fn of(state: u32) -> Option<EntryKind> {
        match state & 0xff {
            0 => Some(EntryKind::Free),
            1 => Some(EntryKind::Open),
            2 => Some(EntryKind::Wait),
            3 => Some(EntryKind::Hold),
            _ => None,
        }
    }
}

/// A record's `key` word.
///
/// | bits   | meaning                                                            |
/// |--------|--------------------------------------------------------------------|
/// | 0..8   | 1 while the record holds a name, else 0                            |
/// | 32..64 | generation, bumped when the name is reclaimed: an entry or a handle made before can tell the record was reused |
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Key(pub u64);

impl Key {
    pub(crate) fn ready(generation: u32) -> Key {
        Key(1 | u64::from(generation) << 32)
    }

    pub(crate) fn free(generation: u32) -> Key {
        Key(u64::from(generation) << 32)
    }

    /// Whether the record holds a name: exactly a key [`Key::ready`] makes (a key with
    /// other bits set is no latchkey's, and never matches a handle's either).
    pub(crate) fn is_ready(self) -> bool {
        self.0 & 0xffff_ffff == 1
    }

    pub(crate) fn generation(self) -> u32 {
        (self.0 >> 32) as u32
    }
}

/// A futex word that others bump to make its sleeper look again (an entry's `word`, a
/// process's `doorbell`).
///
/// | bits   | meaning                                                         |
/// |--------|-----------------------------------------------------------------|
/// | 0..31  | a count, bumped by every nudge                                   |
/// | 31     | `SLEEPING`: the sleeper sleeps (or is about to) on this word      |
///
/// A sleeper sleeps only while the word holds the value it saw before it last looked,
/// and every nudge changes the word, so no nudge is lost; a futex wake (a system call)
/// is made only when `SLEEPING` was set.
pub(crate) struct Word;

impl Word {
    pub(crate) const SLEEPING: u32 = 1 << 31;
    pub(crate) const COUNT: u32 = !Self::SLEEPING;
}

/// Set in a lock word (a record lock, the table or grow lock) while someone sleeps on it.
pub(crate) const LOCK_CONTENDED: u32 = 1 << 31;

/// The owner of a lock word: who holds it.
///
/// | bits   | meaning                                                        |
/// |--------|----------------------------------------------------------------|
/// | 0..20  | the owner's process slot + 1 (0: nobody)                       |
/// | 20..31 | the slot's incarnation when the owner took it, modulo 2^11     |
/// | 31     | [`LOCK_CONTENDED`] (not part of the owner)                     |
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Owner(pub u32);

/// Process slots a lock word can name: the most a namespace can have.
pub(crate) const MAX_SLOTS: u32 = (1 << 20) - 1;

impl Owner {
    /// Incarnations a lock word tells apart (the mask of its incarnation bits).
    pub(crate) const INCARNATIONS: u32 = (1 << 11) - 1;

    /// A word that names no owner and is not free: a lock whose owner is gone, for the
    /// next taker to take over (and repair).
    pub(crate) const NOBODY: Owner = Owner(1 << 20);

    pub(crate) fn new(slot: u32, incarnation: u32) -> Owner {
        Owner((slot + 1) | (incarnation & Self::INCARNATIONS) << 20)
    }

    /// The slot, if the word names one.
    pub(crate) fn slot(self) -> Option<u32> {
        (self.0 & MAX_SLOTS).checked_sub(1)
    }

    /// Whether `incarnation` is the one the owner had.
    pub(crate) fn is_incarnation(self, incarnation: u32) -> bool {
        (self.0 >> 20) & Self::INCARNATIONS == incarnation & Self::INCARNATIONS
    }
}

#[cfg(not(loom))]
const _: () = {
    assert!(size_of::<Header>() as u64 <= PAGE);
    assert!(size_of::<ProcSlot>() == 64);
    assert!(size_of::<Record>() == 64 + NAME_WORDS * 8);
    assert!(size_of::<Entry>() as u64 == ENTRY_SIZE);
    assert!(size_of::<ChunkHeader>() as u64 == ENTRY_SIZE);
};

/// Which chunk of a geometric directory (chunk `i` holds `base << i` items) holds item
/// `n`, and where in it.
pub(crate) fn locate(n: u32, base: u32) -> (usize, u32) {
    let q = u64::from(n) / u64::from(base) + 1;
    let chunk = 63 - q.leading_zeros();
    let start = u64::from(base) * ((1u64 << chunk) - 1);
    (chunk as usize, (u64::from(n) - start) as u32)
}

/// Items in chunk `i` of a geometric directory.
pub(crate) fn chunk_items(chunk: usize, base: u32) -> u32 {
    base << chunk
}

/// Whether item `n` is the first of a chunk (other than the first chunk): one a process
/// adds a chunk for.
pub(crate) fn starts_a_chunk(n: u32, base: u32) -> bool {
    n % base == 0 && n > 0 && (n / base + 1).is_power_of_two()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_are_located_in_geometric_chunks() {
        assert_eq!(locate(0, 64), (0, 0));
        assert_eq!(locate(63, 64), (0, 63));
        assert_eq!(locate(64, 64), (1, 0));
        assert_eq!(locate(191, 64), (1, 127));
        assert_eq!(locate(192, 64), (2, 0));
        let last = 64 * ((1 << DIRECTORY) - 1) - 1;
        assert_eq!(locate(last, 64), (DIRECTORY - 1, chunk_items(DIRECTORY - 1, 64) - 1));
    }

    #[test]
    fn the_first_item_of_every_chunk_but_the_first_starts_a_chunk() {
        let starts: Vec<u32> = (0..200).filter(|&n| starts_a_chunk(n, 8)).collect();
        assert_eq!(starts, [8, 24, 56, 120]);
        assert!((0..200).filter(|&n| starts_a_chunk(n, 8)).all(|n| locate(n, 8).1 == 0));
    }
}
