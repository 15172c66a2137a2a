//! This process's entries: the free ones of its slot's arena, and more chunks when they
//! run out. Only the owning process takes or frees its entries while it lives (the
//! list of free ones is in its own memory); the protocol writes their states.
//!
//! Each thread keeps one free entry aside (a *spare*), so that a lock taken and given
//! back by the same thread, the uncontended case, takes no lock of the process.

use std::cell::RefCell;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, Weak};

use latchkey_model::Result;

use super::Namespace;
use crate::layout::*;
use crate::sync::atomic::Ordering;

/// The free entries of this process's arena.
pub(crate) struct Arena {
    /// Tells this arena's spares from another namespace's.
    id: u64,
    free: Arc<Mutex<Vec<u32>>>,
}

impl Default for Arena {
    fn default() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Arena { id: NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed), free: Arc::default() }
    }
}

/// A thread's spare entry, of the arena `id`; given back to that arena when the thread
/// ends (or keeps a spare of another arena).
struct Spare {
    id: u64,
    entry: u32,
    home: Weak<Mutex<Vec<u32>>>,
    /// The fork count when it was set aside: a child forked since (whose copy of the
    /// arena's lock may be held by a thread that is not in the child) leaves it.
    forks: u32,
}

impl Drop for Spare {
    fn drop(&mut self) {
        if self.forks != crate::sys::maps::generation() {
            return;
        }
        if let Some(home) = self.home.upgrade().filter(|_| self.entry != 0) {
            home.lock().unwrap_or_else(|e| e.into_inner()).push(self.entry);
        }
    }
}

thread_local! {
    static SPARE: RefCell<Option<Spare>> = const { RefCell::new(None) };
}

impl Namespace {
    /// Lists the free entries of this process's arena (after the slot was scrubbed).
    pub(crate) fn collect_free_entries(&self) -> Result<()> {
        let entries = self.shm.arena_entries(self.shm.me())?;
        let mut free = self.arena.free.lock().unwrap_or_else(|e| e.into_inner());
        free.extend(
            entries
                .iter()
                .rev()
                .filter(|(_, e)| EntryKind::of(e.state.load(Ordering::Acquire)) == Some(EntryKind::Free))
                .map(|(at, _)| *at),
        );
        Ok(())
    }

    /// A free entry of this process's arena, adding a chunk to it if none is left.
    #[inline]
    pub(crate) fn take_entry(&self) -> Result<u32> {
        let id = self.arena.id;
        let spare = SPARE.try_with(|spare| match spare.borrow_mut().as_mut() {
            Some(spare) if spare.id == id && spare.entry != 0 => std::mem::take(&mut spare.entry),
            _ => 0,
        });
        if let Ok(at @ 1..) = spare {
            return Ok(at);
        }
        let mut free = self.arena.free.lock().unwrap_or_else(|e| e.into_inner());
        match free.pop() {
            Some(at) => Ok(at),
            // Under the lock: two threads must not link chunks into the arena at once.
            None => self.add_chunk(&mut free),
        }
    }

    /// Gives back an entry whose state the protocol has set free.
    #[inline]
    pub(crate) fn put_entry(&self, at: u32) {
        let id = self.arena.id;
        let kept = SPARE.try_with(|spare| {
            let mut spare = spare.borrow_mut();
            match spare.as_mut() {
                Some(spare) if spare.id == id => {
                    if spare.entry != 0 {
                        return false;
                    }
                    spare.entry = at;
                    true
                }
                // The first entry this thread gives back to this arena: the spare of
                // another arena goes home.
                _ => {
                    let (home, forks) = (Arc::downgrade(&self.arena.free), crate::sys::maps::generation());
                    *spare = Some(Spare { id, entry: at, home, forks });
                    true
                }
            }
        });
        if kept != Ok(true) {
            self.arena.free.lock().unwrap_or_else(|e| e.into_inner()).push(at);
        }
    }

    /// Adds a chunk of entries to this process's arena (whose free list, `free`, the
    /// caller holds locked); returns one of them.
    #[cold]
    fn add_chunk(&self, free: &mut Vec<u32>) -> Result<u32> {
        let _op = crate::crash::op("arena");
        let shm = &self.shm;
        let me = shm.me();
        let offset = self.grow(ENTRY_CHUNK, ENTRY_CHUNK)?;
        let chunk = (offset / ENTRY_SIZE) as u32;
        let header = shm.chunk(chunk)?;
        header.owner.store(me, Ordering::Relaxed);
        let per_chunk = (ENTRY_CHUNK / ENTRY_SIZE) as u32;
        for at in chunk + 1..chunk + per_chunk {
            shm.entry(at)?.owner.store(me, Ordering::Relaxed);
        }
        let slot = shm.slot(me)?;
        header.next.store(slot.arena.load(Ordering::Acquire), Ordering::Release);
        crash_point!("arena.chunk_linked");
        slot.arena.store(chunk, Ordering::Release);
        crash_point!("arena.chunk_published");
        free.extend((chunk + 2..chunk + per_chunk).rev());
        Ok(chunk + 1)
    }
}
