//! This process's entries: the free ones of its slot's arena, and more chunks when they
//! run out. Only the owning process takes or frees its entries while it lives (the
//! list of free ones is in its own memory); the protocol writes their states.

use std::sync::Mutex;

use latchkey_model::Result;

use super::Namespace;
use crate::layout::*;
use crate::sync::atomic::Ordering;

/// The free entries of this process's arena.
#[derive(Default)]
pub(crate) struct Arena {
    free: Mutex<Vec<u32>>,
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
        if let Some(at) = self.arena.free.lock().unwrap_or_else(|e| e.into_inner()).pop() {
            return Ok(at);
        }
        self.add_chunk()
    }

    /// Gives back an entry whose state the protocol has set free.
    #[inline]
    pub(crate) fn put_entry(&self, at: u32) {
        self.arena.free.lock().unwrap_or_else(|e| e.into_inner()).push(at);
    }

    /// Adds a chunk of entries to this process's arena; returns one of them.
    #[cold]
    fn add_chunk(&self) -> Result<u32> {
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
        let mut free = self.arena.free.lock().unwrap_or_else(|e| e.into_inner());
        free.extend((chunk + 2..chunk + per_chunk).rev());
        Ok(chunk + 1)
    }
}
