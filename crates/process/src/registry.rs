//! The registry of names: a sharded hash table from name to its semaphore.
//!
//! Reclamation: every user of a name (a primitive, a guard, a waiting future) holds an
//! `Arc` of its entry, and new ones are handed out only under the shard lock. So an
//! entry whose only reference is the table's is held and awaited by nobody, and can be
//! dropped. Shards sweep such entries when they have doubled since the last sweep,
//! which keeps the cost amortized O(1) and the table bounded by what is in use.
//! (The registry is outside the loom models, so it uses std and parking_lot directly.)

use std::hash::BuildHasher;

use hashbrown::{DefaultHashBuilder, HashTable};
use latchkey_model::{validate_name, Error, ErrorKind, Name, Result};

use std::sync::Arc;

use parking_lot::Mutex;

use crate::engine::FairSemaphore;

const SHARDS: usize = 64;
/// A shard does not sweep below this many entries.
const MIN_SWEEP: usize = 64;

/// One name and its semaphore.
#[derive(Debug)]
pub struct Entry {
    pub(crate) name: Name,
    pub(crate) semaphore: FairSemaphore,
}

/// Names to their semaphores.
pub struct Registry {
    hasher: DefaultHashBuilder,
    shards: Box<[Shard]>,
}

#[repr(align(128))] // one shard per cache line pair: no false sharing between shards
struct Shard(Mutex<Table>);

struct Table {
    entries: HashTable<Arc<Entry>>,
    sweep_at: usize,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        let shards = (0..SHARDS).map(|_| Shard(Mutex::new(Table { entries: HashTable::new(), sweep_at: MIN_SWEEP })));
        Registry { hasher: DefaultHashBuilder::default(), shards: shards.collect() }
    }

    /// The entry of `name`, created with `capacity` if nobody has it open.
    pub fn open(&self, name: &str, capacity: u32) -> Result<Arc<Entry>> {
        validate_name(name)?;
        let hash = self.hasher.hash_one(name);
        let mut table = self.shard(hash).lock();
        if let Some(entry) = table.entries.find(hash, |e| e.name.as_str() == name) {
            let open = entry.semaphore.capacity();
            if open != capacity {
                return Err(Error::new(
                    ErrorKind::CapacityMismatch,
                    format!("the name is open as {}, and was asked for as {}", describe(open), describe(capacity)),
                )
                .with_name(name));
            }
            return Ok(entry.clone());
        }
        if table.entries.len() >= table.sweep_at {
            self.sweep(&mut table);
        }
        let entry = Arc::new(Entry { name: Name::new(name)?, semaphore: FairSemaphore::new(capacity) });
        table.entries.insert_unique(hash, entry.clone(), |e| self.hasher.hash_one(e.name.as_str()));
        Ok(entry)
    }

    /// The entry of `name` if somebody has it open.
    pub fn get(&self, name: &str) -> Option<Arc<Entry>> {
        let hash = self.hasher.hash_one(name);
        self.shard(hash).lock().entries.find(hash, |e| e.name.as_str() == name).cloned()
    }

    /// Every entry, open or not yet swept.
    pub fn entries(&self) -> Vec<Arc<Entry>> {
        self.shards.iter().flat_map(|shard| shard.0.lock().entries.iter().cloned().collect::<Vec<_>>()).collect()
    }

    /// How many names the table holds, including idle ones not yet swept.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|shard| shard.0.lock().entries.len()).sum()
    }

    /// Whether the table holds no names.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every idle entry now, and shrinks the tables to fit.
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
        // Only the table holds these: nobody holds, waits for, or can reach them.
        table.entries.retain(|entry| Arc::strong_count(entry) > 1);
        let len = table.entries.len();
        table.sweep_at = (2 * len).max(MIN_SWEEP);
        if table.entries.capacity() > 4 * table.sweep_at {
            table.entries.shrink_to(table.sweep_at, |e| self.hasher.hash_one(e.name.as_str()));
        }
    }
}

impl Default for Registry {
    fn default() -> Self {
        Registry::new()
    }
}

/// A capacity as a reader would say it.
pub(crate) fn describe(capacity: u32) -> String {
    match capacity {
        1 => "a mutex (capacity 1)".to_string(),
        latchkey_model::RWLOCK_CAPACITY => "a reader-writer lock".to_string(),
        n => format!("a semaphore of {n} permits"),
    }
}
