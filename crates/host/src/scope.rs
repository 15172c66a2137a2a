//! The host scope behind the scope contract of `latchkey-model`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use latchkey_model::{
    describe_capacity, validate_name, BoxFuture, Error, ErrorKind, Holder, Lease, Name, RawLock, RawScope, Result,
    State,
};

use crate::layout::EntryKind;
use crate::namespace::{default_dir, Namespace};
use crate::protocol::{lost, Grant, Rec};
use crate::sync::atomic::Ordering;
use crate::sys;
use crate::table::{name_of, Found};
use crate::wait::{wait_blocking, Queued, Waits};

/// A namespace open in this process, and the threads that serve its waits.
pub(crate) struct Host {
    /// Dropped first: its threads stop before the namespace may close.
    waits: Waits,
    ns: Arc<Namespace>,
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
    let waits = Waits::new().map_err(|e| {
        Error::new(ErrorKind::Unavailable, format!("cannot create an event descriptor: {e}")).with_scope(ns.url())
    })?;
    let host = Arc::new(Host { waits, ns });
    let _gate = sys::maps::gate();
    let mut open = OPEN.lock().unwrap_or_else(|e| e.into_inner());
    let table = open.get_or_insert_with(HashMap::new);
    // A thread that opened the same directory meanwhile wins.
    if let Some(first) = table.get(&key).and_then(Weak::upgrade).filter(|h| !Arc::ptr_eq(h, &host)) {
        if first.ns.is_ours() && !first.ns.shm.is_lost() {
            return Ok(first);
        }
    }
    table.retain(|_, host| host.strong_count() > 0);
    table.insert(key, Arc::downgrade(&host));
    Ok(host)
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
        if host.ns.is_ours() && host.ns.shm.is_lost() {
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
        let Found { index, generation } = match ns.open_name(name, capacity) {
            // The namespace was found lost when the name was opened: open it again.
            Err(e) if e.kind() == ErrorKind::HandleLost && ns.shm.is_lost() => {
                return RawScope::open(self, name, capacity)
            }
            other => other.map_err(scoped)?,
        };
        let name = Name::new(name)?;
        Ok(Arc::new(HostLock { host: host.clone(), index, generation, capacity, name }))
    }

    fn inspect(&self, name: &str) -> Result<State> {
        let host = self.current()?;
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
fn state_of(ns: &Namespace, found: Found, name: Name) -> Result<State> {
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
    let now = sys::now_ns();
    let holders = snapshot
        .holds
        .iter()
        .map(|&(slot, permits, since)| Holder {
            pid: ns.pid_of(slot),
            permits,
            held_for: Some(Duration::from_nanos(now.saturating_sub(since))),
        })
        .collect();
    Ok(State {
        name,
        capacity: snapshot.capacity,
        in_use: snapshot.capacity.saturating_sub(snapshot.available),
        holders,
        waiters: snapshot.queued.len(),
        waiting_exclusive: snapshot.queued.iter().filter(|&&p| p == snapshot.capacity).count(),
        last_token: snapshot.last_token,
    })
}

/// One name of a host namespace.
pub struct HostLock {
    host: Arc<Host>,
    index: u32,
    generation: u32,
    capacity: u32,
    name: Name,
}

impl Drop for HostLock {
    fn drop(&mut self) {
        if self.host.ns.is_ours() {
            self.host.ns.close_name(self.index);
        }
    }
}

/// A lease to release if the future that holds it is dropped before it runs.
struct ReleaseOnDrop<'a> {
    lock: &'a HostLock,
    lease: Option<Lease>,
}

impl ReleaseOnDrop<'_> {
    fn disarm(mut self) -> Lease {
        self.lease.take().expect("armed")
    }
}

impl Drop for ReleaseOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(lease) = self.lease.take() {
            let _ = self.lock.release(lease);
        }
    }
}

impl HostLock {
    fn ns(&self) -> &Arc<Namespace> {
        &self.host.ns
    }

    fn rec(&self) -> Result<Rec<'_>> {
        Rec::new(&self.ns().shm, self.index, self.generation)
    }

    /// Adds the name and the scope to an error of the layers below.
    fn scoped(&self, error: Error) -> Error {
        error.with_name(self.name.as_str()).with_scope(self.ns().url())
    }

    fn check_request(&self, permits: u32) -> Result<()> {
        self.check_process()?;
        if permits == 0 || permits > self.capacity {
            return Err(self.ns().error(
                ErrorKind::CapacityMismatch,
                format!("asked for {permits} permits of {}", describe_capacity(self.capacity)),
                Some(self.name.as_str()),
            ));
        }
        Ok(())
    }

    /// Refuses a copy of the handle in a forked child: it would act as the parent.
    #[inline]
    fn check_process(&self) -> Result<()> {
        if self.ns().is_ours() {
            Ok(())
        } else {
            Err(self.ns().forked_error(Some(self.name.as_str())))
        }
    }

    fn lease(grant: Grant, permits: u32) -> Lease {
        Lease::new(permits, grant.token, u64::from(grant.entry))
    }

    /// The hold behind `lease`, if this process holds it.
    fn held(&self, lease: &Lease) -> Result<u32> {
        self.check_process()?;
        let shm = &self.ns().shm;
        if shm.is_lost() {
            return Err(self.scoped(lost()));
        }
        let at = u32::try_from(lease.ticket()).unwrap_or(0);
        let holds = shm.entry(at).is_ok_and(|e| {
            EntryKind::of(e.state.load(Ordering::Acquire)) == Some(EntryKind::Hold)
                && e.owner.load(Ordering::Acquire) == shm.me()
                && e.record.load(Ordering::Acquire) == self.index
                && e.generation.load(Ordering::Acquire) == self.generation
                && e.order.load(Ordering::Acquire) == lease.token()
                && e.permits.load(Ordering::Acquire) == lease.permits()
        });
        if holds {
            return Ok(at);
        }
        let why = format!("the lease with token {} is not held by this process", lease.token());
        Err(self.ns().error(ErrorKind::NotHeld, why, Some(self.name.as_str())))
    }

    fn timeout(&self) -> Error {
        let why = "the deadline passed before the lock was granted";
        self.ns().error(ErrorKind::Timeout, why, Some(self.name.as_str()))
    }

    /// Takes `permits` now if nobody waits and they are free; otherwise queues a request
    /// for them (`async_`: to be waited for asynchronously). Returns the grant, or the
    /// entry queued.
    fn grant_or_enqueue(&self, permits: u32, async_: bool) -> Result<std::result::Result<Grant, u32>> {
        let ns = self.ns();
        let at = ns.take_entry()?;
        let queued = self.rec().and_then(|rec| {
            let mut locked = rec.lock()?;
            if let Some(grant) = locked.try_grant(at, permits)? {
                return Ok(Err(grant));
            }
            locked.enqueue(at, permits, async_)?;
            Ok(Ok(()))
        });
        match queued {
            Ok(Err(grant)) => Ok(Ok(grant)),
            Ok(Ok(())) => {
                // Queued: is the file still the one mapped? (A slow path; the holder
                // keeps the lock meanwhile.)
                if !ns.verify_identity() {
                    crate::wait::withdraw_request(ns, self.rec()?, at);
                    return Err(lost());
                }
                Ok(Err(at))
            }
            Err(e) => {
                ns.put_entry(at);
                Err(e)
            }
        }
    }
}

impl RawLock for HostLock {
    fn name(&self) -> &Name {
        &self.name
    }

    fn scope_url(&self) -> &str {
        self.ns().url()
    }

    fn capacity(&self) -> u32 {
        self.capacity
    }

    fn try_acquire(&self, permits: u32) -> Result<Option<Lease>> {
        self.check_request(permits)?;
        let ns = self.ns();
        let at = ns.take_entry().map_err(|e| self.scoped(e))?;
        let granted = self.rec().and_then(|rec| {
            let mut locked = rec.lock()?;
            if let Some(grant) = locked.try_grant(at, permits)? {
                return Ok(Some(grant));
            }
            // Held by a process that died, with nobody waiting to notice: free it, try again.
            if locked.has_dead()? && locked.repair()? {
                return locked.try_grant(at, permits);
            }
            Ok(None)
        });
        match granted {
            Ok(Some(grant)) => Ok(Some(Self::lease(grant, permits))),
            other => {
                ns.put_entry(at);
                other.map(|_| None).map_err(|e| self.scoped(e))
            }
        }
    }

    fn acquire(&self, permits: u32) -> BoxFuture<'_, Result<Lease>> {
        Box::pin(async move {
            self.check_request(permits)?;
            let at = match self.grant_or_enqueue(permits, true).map_err(|e| self.scoped(e))? {
                Ok(grant) => return Ok(Self::lease(grant, permits)),
                Err(at) => at,
            };
            let rec = self.rec().map_err(|e| self.scoped(e))?;
            let queued = match Queued::new(self.ns(), &self.host.waits, rec, at) {
                Ok(queued) => queued,
                Err(e) => {
                    crate::wait::withdraw_request(self.ns(), rec, at);
                    return Err(self.scoped(e));
                }
            };
            let grant = queued.await.map_err(|e| self.scoped(e))?;
            Ok(Self::lease(grant, permits))
        })
    }

    fn acquire_blocking(&self, permits: u32, deadline: Option<Instant>) -> Result<Lease> {
        self.check_request(permits)?;
        let at = match self.grant_or_enqueue(permits, false).map_err(|e| self.scoped(e))? {
            Ok(grant) => return Ok(Self::lease(grant, permits)),
            Err(at) => at,
        };
        let rec = self.rec().map_err(|e| self.scoped(e))?;
        match wait_blocking(self.ns(), &self.host.waits, rec, at, deadline).map_err(|e| self.scoped(e))? {
            Some(grant) => Ok(Self::lease(grant, permits)),
            None => Err(self.timeout()),
        }
    }

    fn release(&self, lease: Lease) -> Result<()> {
        let at = self.held(&lease)?;
        let ns = self.ns();
        self.rec().and_then(|rec| rec.lock_any()?.release(at)).map_err(|e| self.scoped(e))?;
        ns.put_entry(at);
        if ns.shm.is_lost() {
            return Err(self.scoped(lost()));
        }
        Ok(())
    }

    fn cede(&self, lease: Lease) -> BoxFuture<'_, Result<Lease>> {
        // Queued when first polled; a future dropped before that gives the lease up.
        let unpolled = ReleaseOnDrop { lock: self, lease: Some(lease) };
        Box::pin(async move {
            let lease = unpolled.disarm();
            let at = self.held(&lease)?;
            let rec = self.rec().map_err(|e| self.scoped(e))?;
            let queued = rec.lock().and_then(|mut locked| locked.cede(at, true)).map_err(|e| self.scoped(e))?;
            if !queued {
                return Ok(lease);
            }
            let queued = match Queued::new(self.ns(), &self.host.waits, rec, at) {
                Ok(queued) => queued,
                Err(e) => {
                    crate::wait::withdraw_request(self.ns(), rec, at);
                    return Err(self.scoped(e));
                }
            };
            let grant = queued.await.map_err(|e| self.scoped(e))?;
            Ok(Self::lease(grant, lease.permits()))
        })
    }

    fn cede_blocking(&self, lease: Lease) -> Result<Lease> {
        let at = self.held(&lease)?;
        let rec = self.rec().map_err(|e| self.scoped(e))?;
        let queued = rec.lock().and_then(|mut locked| locked.cede(at, false)).map_err(|e| self.scoped(e))?;
        if !queued {
            return Ok(lease);
        }
        match wait_blocking(self.ns(), &self.host.waits, rec, at, None).map_err(|e| self.scoped(e))? {
            Some(grant) => Ok(Self::lease(grant, lease.permits())),
            None => Err(self.timeout()),
        }
    }

    fn inspect(&self) -> Result<State> {
        let found = Found { index: self.index, generation: self.generation };
        state_of(self.ns(), found, self.name.clone()).map_err(|e| self.scoped(e))
    }

    fn check(&self, lease: &Lease) -> Result<()> {
        let lost_hold = |why: &str| self.ns().error(ErrorKind::HandleLost, why.to_string(), Some(self.name.as_str()));
        if self.ns().shm.is_lost() || !self.ns().verify_identity() {
            return Err(lost_hold(
                "the namespace file was deleted, replaced or cut short: the hold no longer excludes anyone",
            ));
        }
        self.held(lease).map(|_| ()).map_err(|_| lost_hold("the hold is no longer recorded"))
    }
}
