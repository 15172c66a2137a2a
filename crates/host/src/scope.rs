//! The host scope behind the scope contract of `latchkey-model`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use latchkey_model::{validate_name, Error, ErrorKind, Holder, Name, RawLock, RawScope, Result, State, Waiter};

use crate::handle::HostLock;
use crate::layout::EntryKind;
use crate::namespace::{default_dir, Namespace};
use crate::protocol::Rec;
use crate::sync::atomic::Ordering;
use crate::sys;
use crate::table::{name_of, Found};
use crate::wait::Waits;

/// A namespace open in this process, and the threads that serve its waits.
pub(crate) struct Host {
    /// Dropped first: its threads stop before the namespace may close.
    pub(crate) waits: Waits,
    pub(crate) ns: Arc<Namespace>,
}

/// Every process of the machine that opens the same namespace directory.
///
/// `host:` is the per-user namespace, `/tmp/latchkey-<uid>`, the same for every process
/// of the user whatever its environment; `host:/dir` is a directory the user chooses.
/// Lock state lives in a shared-memory file of the directory, so taking a free lock
/// makes no system call; waiters sleep on futexes; a process's holds and places in queues
/// are freed when it dies, detected through a kernel-held lock on its slot.
///
/// Limits come from memory, not from the file's layout: the file grows as processes,
/// names, holders and waiters come. A process maps at most 64 GiB of it (less where the
/// address space is limited), and a name has at most 2^30 − 1 permits.
pub struct HostScope {
    dir: Option<PathBuf>,
    url: String,
    /// The namespace in use: opened again if it is lost (deleted, replaced or cut short).
    host: Mutex<Arc<Host>>,
}

/// The namespaces open in this process, by directory (under the fork gate, so that a
/// child forked meanwhile never inherits the lock held).
static OPEN: Mutex<Option<HashMap<PathBuf, Weak<Host>>>> = Mutex::new(None);

/// The namespace of `dir` open in this process, or a new one.
fn open_host(dir: Option<&Path>) -> Result<Arc<Host>> {
    let key = dir.map_or_else(default_dir, Path::to_path_buf);
    let usable = |host: &Arc<Host>| host.ns.is_ours() && host.ns.verify_identity();
    let cached = || {
        let _gate = sys::maps::gate();
        let open = OPEN.lock().unwrap_or_else(|e| e.into_inner());
        open.as_ref().and_then(|table| table.get(&key)).and_then(Weak::upgrade)
    };
    if let Some(host) = cached().filter(usable) {
        return Ok(host);
    }
    let ns = Arc::new(Namespace::open(dir)?);
    let waits = Waits::new(&ns).map_err(|e| {
        Error::new(ErrorKind::Unavailable, format!("cannot create an event descriptor: {e}")).with_scope(ns.url())
    })?;
    let host = Arc::new(Host { waits, ns });
    // Whatever is upgraded under the gate is dropped after it: dropping the last handle of
    // a namespace unmaps it, which takes the gate.
    let first = {
        let _gate = sys::maps::gate();
        let mut open = OPEN.lock().unwrap_or_else(|e| e.into_inner());
        let table = open.get_or_insert_with(HashMap::new);
        let first = table.get(&key).and_then(Weak::upgrade);
        // A thread that opened the same directory meanwhile wins.
        if !first.as_ref().is_some_and(|first| first.ns.is_ours() && !first.ns.shm.is_lost()) {
            table.retain(|_, host| host.strong_count() > 0);
            table.insert(key, Arc::downgrade(&host));
        }
        first
    };
    match first {
        Some(first) if first.ns.is_ours() && !first.ns.shm.is_lost() => Ok(first),
        _ => Ok(host),
    }
}

impl HostScope {
    /// Opens the namespace in `dir`, or the per-user default one. Within a process,
    /// opening the same directory again shares the namespace (and its process slot).
    pub fn open(dir: Option<&Path>) -> Result<HostScope> {
        let host = open_host(dir)?;
        let url = host.ns.url().to_string();
        Ok(HostScope { dir: dir.map(Path::to_path_buf), url, host: Mutex::new(host) })
    }

    /// The namespace directory's URL: `host:` or `host:/dir`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The namespace directory.
    pub fn directory(&self) -> PathBuf {
        self.dir.clone().unwrap_or_else(default_dir)
    }

    /// The namespace in use, opened again first if it was lost.
    fn current(&self) -> Result<Arc<Host>> {
        let mut host = self.host.lock().unwrap_or_else(|e| e.into_inner());
        if host.ns.is_ours() && !host.ns.may_grant() {
            *host = open_host(self.dir.as_deref())?;
        }
        Ok(host.clone())
    }
}

impl HostScope {
    /// For tests: every entry in use in the namespace that belongs to another process, as
    /// "slot S: KIND of record R". After every other process has ended (or died and been
    /// repaired), none should be left.
    #[doc(hidden)]
    pub fn entries_of_others(&self) -> Result<Vec<String>> {
        let host = self.current()?;
        let shm = &host.ns.shm;
        let mut left = Vec::new();
        for slot in (0..shm.slots()).filter(|&s| s != shm.me()) {
            for (at, e) in shm.arena_entries(slot)? {
                let kind = EntryKind::of(e.state.load(Ordering::Acquire));
                if kind != Some(EntryKind::Free) {
                    let record = e.record.load(Ordering::Acquire);
                    left.push(format!("slot {slot}: entry {at}, {kind:?} of record {record}"));
                }
            }
        }
        Ok(left)
    }
}

impl std::fmt::Debug for HostScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("HostScope").field(&self.directory()).finish()
    }
}

impl RawScope for HostScope {
    fn url(&self) -> &str {
        HostScope::url(self)
    }

    fn open(&self, name: &str, capacity: u32) -> Result<Arc<dyn RawLock>> {
        let host = self.current()?;
        let ns = &host.ns;
        let scoped = |e: Error| e.with_name(name).with_scope(ns.url());
        validate_name(name).map_err(scoped)?;
        if !ns.is_ours() {
            return Err(ns.forked_error(Some(name)));
        }
        if capacity == 0 || capacity > latchkey_model::RWLOCK_CAPACITY {
            return Err(ns.error(ErrorKind::Unsupported, format!("a capacity of {capacity} permits"), Some(name)));
        }
        let found = match ns.open_name(name, capacity) {
            // The namespace was found lost when the name was opened: open it again.
            Err(e) if e.kind() == ErrorKind::HandleLost && ns.shm.is_lost() => {
                return RawScope::open(self, name, capacity);
            }
            other => other.map_err(scoped)?,
        };
        Ok(Arc::new(HostLock::new(host.clone(), Name::new(name)?, capacity, found, false)?))
    }

    fn open_once(&self, name: &str, capacity: u32) -> Result<Arc<dyn RawLock>> {
        let host = self.current()?;
        let ns = &host.ns;
        let scoped = |e: Error| e.with_name(name).with_scope(ns.url());
        if !ns.is_ours() {
            return Err(ns.forked_error(Some(name)));
        }
        if capacity == 0 || capacity > latchkey_model::RWLOCK_CAPACITY {
            return Err(ns.error(ErrorKind::Unsupported, format!("a capacity of {capacity} permits"), Some(name)));
        }
        let found = match ns.find_or_create(name, capacity) {
            // The namespace was found lost when the name was added: open it again.
            Err(e) if e.kind() == ErrorKind::HandleLost && ns.shm.is_lost() => {
                return RawScope::open_once(self, name, capacity);
            }
            other => other.map_err(scoped)?,
        };
        Ok(Arc::new(HostLock::new(host.clone(), Name::new(name)?, capacity, found, true)?))
    }

    fn inspect(&self, name: &str) -> Result<State> {
        let host = self.current()?;
        if !host.ns.is_ours() {
            return Err(host.ns.forked_error(Some(name)));
        }
        let name = Name::new(name).map_err(|e| e.with_scope(host.ns.url()))?;
        let scoped = |e: Error| e.with_name(name.as_str()).with_scope(host.ns.url());
        match host.ns.find(name.as_str()).map_err(scoped)? {
            Some(found) => state_of(&host.ns, found, name.clone()).map_err(scoped),
            None => Ok(State::idle(name)),
        }
    }

    fn location(&self) -> Option<String> {
        Some(self.directory().display().to_string())
    }

    fn list(&self) -> Result<Vec<State>> {
        let host = self.current()?;
        let ns = &host.ns;
        if !ns.is_ours() {
            return Err(ns.forked_error(None));
        }
        let mut states = Vec::new();
        for found in ns.names() {
            let rec = Rec::new(&ns.shm, found.index, found.generation).map_err(|e| e.with_scope(ns.url()))?;
            if rec.looks_idle() {
                continue;
            }
            let Ok(name) = Name::new(&name_of(rec.r)) else { continue };
            let state = state_of(ns, found, name).map_err(|e| e.with_scope(ns.url()))?;
            if state.in_use > 0 || state.waiters > 0 {
                states.push(state);
            }
        }
        states.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(states)
    }
}

/// The state of the record `found`, after freeing what dead processes left in it: `inspect`
/// shows no dead holder, even where no waiter has come to notice it yet.
pub(crate) fn state_of(ns: &Namespace, found: Found, name: Name) -> Result<State> {
    let rec = Rec::new(&ns.shm, found.index, found.generation)?;
    let locked = if ns.is_ours() { rec.lock() } else { Err(ns.forked_error(Some(name.as_str()))) };
    let mut locked = match locked {
        Ok(locked) => locked,
        Err(e) if e.kind() == ErrorKind::HandleLost && !ns.shm.is_lost() && ns.is_ours() => {
            return Ok(State::idle(name)); // reclaimed since it was found
        }
        Err(e) => return Err(e),
    };
    if locked.has_dead()? {
        locked.repair()?;
    }
    let snapshot = locked.snapshot()?;
    drop(locked);
    let now = sys::process::coarse_now_ns();
    // A pid of another pid namespace means another process here: not shown.
    let pid = |slot| if ns.shares_pid_namespace_with(slot) { ns.pid_of(slot) } else { 0 };
    let since = |ns: u64| Some(Duration::from_nanos(now.saturating_sub(ns)));
    let holders = snapshot
        .holds
        .iter()
        .map(|&(slot, permits, from)| Holder::new(pid(slot), permits).held_for(since(from)))
        .collect();
    let queue = snapshot
        .queued
        .iter()
        .map(|&(slot, permits, from)| Waiter::new(pid(slot), permits).waiting_for(since(from)))
        .collect();
    let mut state = State::idle(name);
    state.capacity = snapshot.capacity;
    state.in_use = snapshot.capacity.saturating_sub(snapshot.available);
    state.holders = holders;
    state.waiters = snapshot.queued.len();
    state.waiting_exclusive = snapshot.queued.iter().filter(|q| q.1 == snapshot.capacity).count();
    state.queue = queue;
    state.last_token = snapshot.last_token;
    Ok(state)
}
