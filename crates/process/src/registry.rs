//! The registry of names: a sharded hash table from name to its semaphore.
//!
//! # Reclamation
//! An entry is *in use* while a [`Handle`] is open on it (counted in `users`), or while
//! anyone holds or waits for its permits (its semaphore is not idle). Shards sweep
//! entries that are not in use when they have doubled since the last sweep, which keeps
//! the cost amortized O(1) and the table bounded by what is in use.
//!
//! A sweep *retires* an entry with one compare-and-swap from idle, so it races fairly
//! with an acquire through the per-thread cache: either the acquire wins and the entry
//! stays, or the entry is retired and the acquire fails and looks the name up again.
//! Hence at most one live entry per name, and an entry stays registered (its memory
//! owned by the table) for as long as any permit of it is held. [`Permit`]s rely on
//! that to hold a plain pointer.
//!
//! The registry is outside the loom models, so it uses std and parking_lot directly.
//!
//! [`Permit`]: crate::Permit

use std::cell::RefCell;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use hashbrown::{DefaultHashBuilder, HashTable};
use latchkey_model::{describe_capacity, validate_name, Error, ErrorKind, Holder, Name, Result, State, Waiter};
use parking_lot::Mutex;

use crate::engine::FairSemaphore;
use crate::{Handle, Permit};

const SHARDS: usize = 64;
/// A shard does not sweep below this many entries.
const MIN_SWEEP: usize = 64;
/// Slots of the per-thread cache of resolved names.
const CACHE_SLOTS: usize = 16;

/// One name and its semaphore.
#[derive(Debug)]
pub struct Entry {
    pub(crate) name: Name,
    pub(crate) semaphore: FairSemaphore,
    /// Open [`Handle`]s.
    pub(crate) users: AtomicUsize,
    /// Leases handed out through the scope contract, by token, with their permits, so
    /// that a lease this name did not grant (or that was already given back) is refused.
    pub(crate) leases: Mutex<hashbrown::HashMap<u64, u32>>,
}

impl Entry {
    /// A snapshot of the entry. Holders are reported as one, this process: telling them
    /// apart would cost the uncontended path.
    pub(crate) fn state(&self) -> State {
        let waiting = self.semaphore.waiting();
        let capacity = self.semaphore.capacity();
        let pid = std::process::id();
        let in_use = self.semaphore.in_use();
        let mut state = State::idle(self.name.clone());
        state.capacity = capacity;
        state.in_use = in_use;
        if in_use > 0 {
            state.holders = vec![Holder::new(pid, in_use)];
        }
        state.waiters = waiting.len();
        state.waiting_exclusive = waiting.iter().filter(|&&permits| permits == capacity).count();
        state.queue = waiting.iter().map(|&permits| Waiter::new(pid, permits)).collect();
        state.last_token = self.semaphore.last_token();
        state
    }
}

/// Names to their semaphores.
pub struct Registry {
    /// Tells this registry's slots in the per-thread cache apart; never reused.
    id: u64,
    hasher: DefaultHashBuilder,
    shards: Box<[Shard]>,
}

#[repr(align(128))] // a shard per pair of cache lines: no false sharing between shards
struct Shard(Mutex<Table>);

struct Table {
    entries: HashTable<Arc<Entry>>,
    sweep_at: usize,
    /// The highest fencing token of any entry this shard has dropped. Every entry of a
    /// name lives in the same shard, so a name that starts over continues from here and
    /// its tokens keep increasing for the life of the registry.
    token_floor: u64,
}

struct Cached {
    registry: u64,
    hash: u64,
    entry: Arc<Entry>,
}

thread_local! {
    /// Recently resolved names of this thread, direct-mapped by hash. A slot keeps its
    /// entry's memory alive but does not count as a use: a retired entry found here is
    /// skipped.
    static CACHE: RefCell<[Option<Cached>; CACHE_SLOTS]> = const { RefCell::new([const { None }; CACHE_SLOTS]) };
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        static IDS: AtomicU64 = AtomicU64::new(1);
        let shards = (0..SHARDS)
            .map(|_| Shard(Mutex::new(Table { entries: HashTable::new(), sweep_at: MIN_SWEEP, token_floor: 0 })));
        Registry {
            id: IDS.fetch_add(1, Ordering::Relaxed),
            hasher: DefaultHashBuilder::default(),
            shards: shards.collect(),
        }
    }

    /// Opens a handle on `name`, creating its entry with `capacity` if it is not in use.
    /// The handle keeps the registry alive.
    pub fn open(self: &Arc<Self>, name: &str, capacity: u32) -> Result<Handle> {
        validate_name(name)?;
        let hash = self.hasher.hash_one(name);
        let mut table = self.shard(hash).lock();
        let entry = self.find_or_insert(&mut table, hash, name, capacity)?;
        entry.users.fetch_add(1, Ordering::Relaxed);
        Ok(Handle::new(entry, self.clone()))
    }

    /// Takes `permits` of `name` through the per-thread cache, without taking any lock:
    /// `None` if the name is not cached with `capacity`, or the permits are not free, or
    /// the cached entry was retired. [`acquire_registered`](Self::acquire_registered)
    /// sorts those out.
    #[inline]
    pub(crate) fn try_acquire_cached(&self, name: &str, hash: u64, capacity: u32, permits: u32) -> Option<Permit> {
        let entry = self.cached(name, hash, capacity)?;
        // SAFETY: `entry` points into this thread's cache slot, which only this thread
        // changes, and nothing between here and the end of this function does: the
        // `Arc` it points to stays alive. A retired entry grants nothing.
        Permit::try_acquire(unsafe { &*entry }, permits)
    }

    /// This thread's cached entry of `name` with `capacity`. Returns a pointer rather
    /// than a permit so that the result comes back in a register.
    #[inline]
    fn cached(&self, name: &str, hash: u64, capacity: u32) -> Option<*const Arc<Entry>> {
        CACHE.with(|cache| {
            let cache = cache.borrow();
            let cached = cache[hash as usize % CACHE_SLOTS].as_ref()?;
            let entry = &cached.entry;
            let hit = cached.hash == hash
                && cached.registry == self.id
                && entry.semaphore.capacity() == capacity
                && entry.name.as_str() == name;
            hit.then_some(entry as *const Arc<Entry>)
        })
    }

    /// Takes `permits` of `name` if they are free and nobody waits, looking the name up
    /// under its shard lock (where no entry can be retired), and caches it for this
    /// thread.
    #[cold]
    pub(crate) fn acquire_registered(
        &self,
        name: &str,
        hash: u64,
        capacity: u32,
        permits: u32,
    ) -> Result<Option<Permit>> {
        validate_name(name)?;
        let mut table = self.shard(hash).lock();
        let entry = self.find_or_insert(&mut table, hash, name, capacity)?;
        let permit = Permit::try_acquire(&entry, permits);
        drop(table);
        let slot = hash as usize % CACHE_SLOTS;
        CACHE.with(|cache| cache.borrow_mut()[slot] = Some(Cached { registry: self.id, hash, entry }));
        Ok(permit)
    }

    /// The hash of `name` in this registry.
    #[inline]
    pub(crate) fn hash(&self, name: &str) -> u64 {
        self.hasher.hash_one(name)
    }

    fn find_or_insert(&self, table: &mut Table, hash: u64, name: &str, capacity: u32) -> Result<Arc<Entry>> {
        if let Ok(found) = table.entries.find_entry(hash, |e| e.name.as_str() == name) {
            let entry = found.get();
            if entry.semaphore.capacity() == capacity {
                return Ok(entry.clone());
            }
            if !(entry.users.load(Ordering::Acquire) == 0 && entry.semaphore.retire()) {
                return Err(Error::new(
                    ErrorKind::CapacityMismatch,
                    format!(
                        "the name is open as {}, and was asked for as {}",
                        describe_capacity(entry.semaphore.capacity()),
                        describe_capacity(capacity)
                    ),
                )
                .with_name(name));
            }
            // Nobody uses it: the name starts over with the new capacity.
            let (retired, _) = found.remove();
            table.token_floor = table.token_floor.max(retired.semaphore.last_token());
        }
        if table.entries.len() >= table.sweep_at {
            self.sweep(table);
        }
        let entry = Arc::new(Entry {
            name: Name::new(name)?,
            semaphore: FairSemaphore::continuing(capacity, table.token_floor),
            users: AtomicUsize::new(0),
            leases: Mutex::default(),
        });
        table.entries.insert_unique(hash, entry.clone(), |e| self.hasher.hash_one(e.name.as_str()));
        Ok(entry)
    }

    /// The entry of `name` if it is registered.
    pub fn get(&self, name: &str) -> Option<Arc<Entry>> {
        let hash = self.hasher.hash_one(name);
        self.shard(hash).lock().entries.find(hash, |e| e.name.as_str() == name).cloned()
    }

    /// Every registered entry.
    pub fn entries(&self) -> Vec<Arc<Entry>> {
        self.shards.iter().flat_map(|shard| shard.0.lock().entries.iter().cloned().collect::<Vec<_>>()).collect()
    }

    /// How many names are registered, including unused ones not yet swept.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|shard| shard.0.lock().entries.len()).sum()
    }

    /// Whether no name is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sweeps every shard now, and shrinks the tables to fit.
    pub fn compact(&self) {
        for shard in self.shards.iter() {
            self.sweep(&mut shard.0.lock());
        }
    }

    fn shard(&self, hash: u64) -> &Mutex<Table> {
        // The top bits pick the shard; the table uses the low bits.
        &self.shards[(hash >> (64 - SHARDS.trailing_zeros())) as usize].0
    }

    fn sweep(&self, table: &mut Table) {
        // `users` only grows under the shard lock we hold, so 0 stays 0; `retire` then
        // fails if anybody holds or waits.
        let mut floor = table.token_floor;
        table.entries.retain(|entry| {
            let unused = entry.users.load(Ordering::Acquire) == 0 && entry.semaphore.retire();
            if unused {
                floor = floor.max(entry.semaphore.last_token());
            }
            !unused
        });
        table.token_floor = floor;
        let len = table.entries.len();
        table.sweep_at = (2 * len).max(MIN_SWEEP);
        if table.entries.capacity() > 4 * table.sweep_at {
            table.entries.shrink_to(table.sweep_at, |e| self.hasher.hash_one(e.name.as_str()));
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        // No handle is left (each keeps the registry alive), but permits may be.
        for shard in self.shards.iter() {
            for entry in shard.0.lock().entries.drain() {
                // A held permit points at its entry without owning it: keep such entries
                // alive for good rather than free memory in use.
                if !entry.semaphore.retire() {
                    std::mem::forget(entry);
                }
            }
        }
    }
}

impl Default for Registry {
    fn default() -> Self {
        Registry::new()
    }
}
