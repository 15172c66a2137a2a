//! The host scope behind the scope contract.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use latchkey_model::{
    validate_name, BoxFuture, Error, ErrorKind, Holder, Lease, Name, RawLock, RawScope, Result, State,
};

use crate::async_wait::{WaitGrant, WaitRoom};
use crate::grant_word;
use crate::layout::{available, holder_mask, HOLDERS, QUEUED, WAITERS};
use crate::namespace::Namespace;
use crate::record::{Enqueued, Grant, Rec, PENDING};
use crate::sys;
use crate::table::name_of;

/// Every process of the machine that opens the same namespace directory.
///
/// `host:` is the per-user namespace (`$XDG_RUNTIME_DIR/latchkey`, else
/// `latchkey-<uid>` in the temp directory); `host:/dir` is a directory the user chooses.
/// Lock state lives in a shared-memory file of the directory, so taking a free lock
/// makes no system call; waiters sleep on futexes; a process's holds and places in queues
/// are freed when it dies, detected through a kernel-held lock on its slot.
///
/// Limits of one namespace: 256 processes at once; 4,096 names at once (when the table
/// is full, names that no process has open and nobody holds are reclaimed, and fencing
/// tokens still keep increasing for the life of the file); 32 holders and 32 queued
/// waiters per name.
#[derive(Clone)]
pub struct HostScope {
    ns: Arc<Namespace>,
}

impl HostScope {
    /// Opens the namespace in `dir`, or the per-user default one. Within a process,
    /// opening the same directory again shares the namespace (and its process slot).
    pub fn open(dir: Option<&Path>) -> Result<HostScope> {
        static OPEN: Mutex<Option<HashMap<PathBuf, Weak<Namespace>>>> = Mutex::new(None);
        let key = dir.map_or_else(crate::namespace::default_dir, Path::to_path_buf);
        // (A namespace opened before a fork is the parent's: the child opens its own.)
        let open_here = |table: &HashMap<PathBuf, Weak<Namespace>>| {
            table.get(&key).and_then(Weak::upgrade).filter(|ns| ns.is_ours())
        };
        if let Some(ns) = OPEN.lock().expect("namespace table lock").as_ref().and_then(open_here) {
            return Ok(HostScope { ns });
        }
        // Opened without the table's lock held, which a child forked meanwhile would
        // inherit locked; a thread that opened the same directory first wins.
        let ns = Arc::new(Namespace::open(dir)?);
        let mut open = OPEN.lock().expect("namespace table lock");
        let table = open.get_or_insert_with(HashMap::new);
        if let Some(first) = open_here(table) {
            return Ok(HostScope { ns: first });
        }
        table.insert(key, Arc::downgrade(&ns));
        Ok(HostScope { ns })
    }

    /// The namespace directory's URL.
    pub fn url(&self) -> &str {
        self.ns.url()
    }
}

impl std::fmt::Debug for HostScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("HostScope").field(&self.ns.url()).finish()
    }
}

impl RawScope for HostScope {
    fn url(&self) -> &str {
        self.ns.url()
    }

    fn open(&self, name: &str, capacity: u32) -> Result<Arc<dyn RawLock>> {
        validate_name(name).map_err(|e| e.with_scope(self.ns.url()))?;
        if !self.ns.is_ours() {
            return Err(self.ns.forked_error(name));
        }
        if capacity == 0 || u64::from(capacity) > crate::layout::AVAILABLE {
            return Err(self.ns.error(ErrorKind::Unsupported, format!("a capacity of {capacity} permits"), name));
        }
        let index = loop {
            let (_, found) = self.ns.find_or_create(name, capacity)?;
            self.ns.add_handle(found.index);
            // Looked up again now that this process is a user: from here on, the name
            // cannot be reclaimed, nor its capacity changed by a racing open.
            match self.ns.find_or_create(name, capacity) {
                Ok((_, again)) if again == found => break found.index,
                Ok(_) => self.ns.remove_handle(found.index), // reclaimed in between
                Err(e) => {
                    self.ns.remove_handle(found.index);
                    return Err(e);
                }
            }
        };
        let name = Name::new(name)?;
        Ok(Arc::new(HostLock { ns: self.ns.clone(), index, capacity, name }))
    }

    fn inspect(&self, name: &str) -> Result<State> {
        let name = Name::new(name).map_err(|e| e.with_scope(self.ns.url()))?;
        Ok(match self.ns.lookup(name.as_str())? {
            Some(found) => state_of(&self.ns, found.index, name),
            None => State::idle(name),
        })
    }

    fn list(&self) -> Result<Vec<State>> {
        let mut states: Vec<State> = self
            .ns
            .records()
            .filter_map(|(index, r)| Some(state_of(&self.ns, index, Name::new(&name_of(r)).ok()?)))
            .filter(|state| state.in_use > 0 || state.waiters > 0)
            .collect();
        states.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(states)
    }
}

/// The state of record `index`, after freeing what dead processes left in it: `inspect`
/// shows no dead holder, even where no waiter has come to notice it yet.
fn state_of(ns: &Namespace, index: usize, name: Name) -> State {
    let r = ns.record(index);
    if ns.is_ours() {
        ns.rec(index, r.capacity.load(Ordering::Acquire)).repair_if_dead();
    }
    let state = r.state.load(Ordering::Acquire);
    let capacity = r.capacity.load(Ordering::Acquire);
    let now = sys::now_ns();
    let holders = (0..HOLDERS)
        .filter(|i| holder_mask(state) & (1 << i) != 0)
        .map(|i| {
            let holder = &r.holders[i];
            let owner = holder.owner.load(Ordering::Acquire) & !PENDING;
            Holder {
                pid: owner.checked_sub(1).map_or(0, |slot| ns.proc_slot(slot).pid.load(Ordering::Relaxed)),
                permits: holder.permits.load(Ordering::Relaxed),
                held_for: Some(Duration::from_nanos(now.saturating_sub(holder.since_ns.load(Ordering::Relaxed)))),
            }
        })
        .collect();
    let queued: Vec<u32> = (0..WAITERS)
        .map(|w| &r.waiters[w])
        .filter(|w| w.owner.load(Ordering::Relaxed) != 0 && grant_word::is_queued(w.granted.load(Ordering::Relaxed)))
        .map(|w| w.permits.load(Ordering::Relaxed))
        .collect();
    let blocked = state & QUEUED != 0 && queued.is_empty() && holder_mask(state) == 0;
    State {
        name,
        capacity,
        in_use: if blocked { 0 } else { capacity.saturating_sub(available(state)) },
        holders,
        waiters: queued.len(),
        waiting_exclusive: queued.iter().filter(|&&p| p == capacity).count(),
        last_token: r.last_token.load(Ordering::Acquire),
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

/// One name of a host namespace.
pub struct HostLock {
    ns: Arc<Namespace>,
    index: usize,
    capacity: u32,
    name: Name,
}

impl Drop for HostLock {
    fn drop(&mut self) {
        if self.ns.is_ours() {
            self.ns.remove_handle(self.index);
        }
    }
}

impl HostLock {
    fn rec(&self) -> Rec<'_> {
        self.ns.rec(self.index, self.capacity)
    }

    fn check_request(&self, permits: u32) -> Result<()> {
        self.check_process()?;
        if permits == 0 || permits > self.capacity {
            return Err(self.ns.error(
                ErrorKind::CapacityMismatch,
                format!("asked for {permits} permits of {}", latchkey_model::describe_capacity(self.capacity)),
                self.name.as_str(),
            ));
        }
        Ok(())
    }

    /// Refuses a copy of the handle in a forked child: it would act as the parent.
    #[inline]
    fn check_process(&self) -> Result<()> {
        if self.ns.is_ours() {
            Ok(())
        } else {
            Err(self.ns.forked_error(self.name.as_str()))
        }
    }

    fn lease(grant: Grant, permits: u32) -> Lease {
        Lease::new(permits, grant.token, u64::from(grant.holder))
    }

    /// The grant behind `lease`, if this process holds it.
    fn held(&self, lease: &Lease) -> Result<Grant> {
        self.check_process()?;
        let r = self.ns.record(self.index);
        let holder = lease.ticket();
        let state = r.state.load(Ordering::Acquire);
        let ok = holder < 32 && {
            let slot = &r.holders[holder as usize];
            holder_mask(state) & (1 << holder) != 0
                && slot.owner.load(Ordering::Acquire) == self.ns.slot() + 1
                && slot.token.load(Ordering::Acquire) == lease.token()
                && slot.permits.load(Ordering::Acquire) == lease.permits()
        };
        if ok {
            Ok(Grant { holder: holder as u32, token: lease.token() })
        } else {
            Err(self.ns.error(
                ErrorKind::NotHeld,
                format!("the lease with token {} is not held by this process", lease.token()),
                self.name.as_str(),
            ))
        }
    }

    fn timeout(&self) -> Error {
        self.ns.error(ErrorKind::Timeout, "the deadline passed before the lock was granted", self.name.as_str())
    }
}

impl RawLock for HostLock {
    fn name(&self) -> &Name {
        &self.name
    }

    fn scope_url(&self) -> &str {
        self.ns.url()
    }

    fn capacity(&self) -> u32 {
        self.capacity
    }

    fn try_acquire(&self, permits: u32) -> Result<Option<Lease>> {
        self.check_request(permits)?;
        let mut grant = self.rec().try_acquire(permits)?;
        // Held by a process that died, with nobody waiting to notice: free it, try again.
        if grant.is_none() && self.rec().repair_if_dead() {
            grant = self.rec().try_acquire(permits)?;
        }
        Ok(grant.map(|grant| Self::lease(grant, permits)))
    }

    fn acquire(&self, permits: u32) -> BoxFuture<'_, Result<Lease>> {
        Box::pin(async move {
            self.check_request(permits)?;
            loop {
                if let Some(grant) = self.rec().try_acquire(permits)? {
                    return Ok(Self::lease(grant, permits));
                }
                match self.rec().enqueue(permits)? {
                    Enqueued::Waiting(w) => {
                        let grant = WaitGrant::new(self.ns.clone(), self.index, self.capacity, w).await;
                        return Ok(Self::lease(grant, permits));
                    }
                    Enqueued::Free => {}
                    Enqueued::Full => WaitRoom::new(self.ns.clone(), self.index, self.capacity).await,
                }
            }
        })
    }

    fn acquire_blocking(&self, permits: u32, deadline: Option<Instant>) -> Result<Lease> {
        self.check_request(permits)?;
        match self.rec().acquire_blocking(permits, deadline, &|| false)? {
            Some(grant) => Ok(Self::lease(grant, permits)),
            None => Err(self.timeout()),
        }
    }

    fn release(&self, lease: Lease) -> Result<()> {
        let grant = self.held(&lease)?;
        self.rec().release(grant.holder, lease.permits());
        Ok(())
    }

    fn cede(&self, lease: Lease) -> BoxFuture<'_, Result<Lease>> {
        // Queued when first polled; a future dropped before that gives the lease up.
        let unpolled = ReleaseOnDrop { lock: self, lease: Some(lease) };
        Box::pin(async move {
            let lease = unpolled.disarm();
            let grant = self.held(&lease)?;
            match self.rec().cede_enqueue(grant, lease.permits()) {
                Some(w) => {
                    let grant = WaitGrant::new(self.ns.clone(), self.index, self.capacity, w).await;
                    Ok(Self::lease(grant, lease.permits()))
                }
                None => Ok(lease),
            }
        })
    }

    fn cede_blocking(&self, lease: Lease) -> Result<Lease> {
        let grant = self.held(&lease)?;
        Ok(Self::lease(self.rec().cede_blocking(grant, lease.permits())?, lease.permits()))
    }

    fn inspect(&self) -> Result<State> {
        Ok(state_of(&self.ns, self.index, self.name.clone()))
    }

    fn check(&self, lease: &Lease) -> Result<()> {
        self.held(lease)
            .map(|_| ())
            .map_err(|_| self.ns.error(ErrorKind::HandleLost, "the hold is no longer recorded", self.name.as_str()))
    }
}
