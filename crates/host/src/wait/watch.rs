//! Death notices: a sleeping request is woken when a process it depends on dies, so that
//! it repairs the record at once instead of waking up now and then to check; and every
//! sleeper is woken when the namespace file is deleted, replaced or cut short.
//!
//! Each namespace of this process has one watcher thread, started when it is opened. It
//! polls a pidfd (readable once the process has exited) for every other process that a
//! local request depends on, and wakes those requests when one exits: unconditionally,
//! since a nudge half made by a process that died may have cleared a sleeper's mark
//! without waking it. A pidfd is trusted only once the process's slot is seen alive
//! (its liveness lock held) with the same pid after the pidfd was opened, and no process
//! in the middle of taking the slot, so a reused pid cannot stand in for a dead process.
//! Where that cannot be shown (another pid namespace, no pidfds, a slot kept alive by a
//! forked child, a process that died taking the slot), the request falls back
//! to checking every [`LIVENESS_PERIOD`]. It also watches the namespace file and
//! directory with inotify, where available, and checks the file's identity on any
//! change (see `Namespace::verify_identity`).

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::namespace::Namespace;
use crate::protocol::bump_and_wake;
use crate::sync::atomic::AtomicU32;
use crate::sys;

/// How often a request that depends on a process that cannot be watched checks on it.
pub(crate) const LIVENESS_PERIOD: Duration = Duration::from_millis(20);

/// How many dead-or-idle processes stay watched after the last request that needed them.
const KEPT: usize = 16;

/// How well a request's dependencies are watched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Coverage {
    /// Each one's death will wake the request: it may sleep without a time limit.
    Complete,
    /// Some cannot be watched: the request must check every [`LIVENESS_PERIOD`].
    Partial,
    /// One is dead already: repair first.
    Dead,
}

/// What to wake for a request: its entry's word, and, for an async wait, its process's
/// doorbell. Both live in the namespace mapping.
#[derive(Clone, Copy)]
pub(crate) struct Target {
    word: *const AtomicU32,
    doorbell: Option<*const AtomicU32>,
}

// SAFETY: the words live in the mapping, which the watcher thread keeps alive (it holds
// the namespace), and are only used through atomics.
unsafe impl Send for Target {}

impl Target {
    pub(crate) fn new(word: &AtomicU32, doorbell: Option<&AtomicU32>) -> Target {
        Target { word, doorbell: doorbell.map(|d| d as *const AtomicU32) }
    }

    /// Wakes the request, whatever the marks on its words say.
    fn wake(self) {
        // SAFETY: see `Send`: the mapping outlives every registration.
        unsafe {
            bump_and_wake(&*self.word);
            if let Some(doorbell) = self.doorbell {
                bump_and_wake(&*doorbell);
            }
        }
    }
}

/// The watcher of one namespace.
pub(crate) struct Watcher {
    shared: Arc<Shared>,
    /// Its thread, if it could start: if not (a limit on threads), every wait checks on
    /// what it depends on every [`LIVENESS_PERIOD`] instead.
    thread: Option<std::thread::JoinHandle<()>>,
    /// The copy of the process the thread runs in ([`latchkey_model::process_copy`]).
    copy: (u32, u64),
}

struct Shared {
    watched: Mutex<Watched>,
    /// Wakes the thread to poll a new set of pidfds, or to stop.
    event: OwnedFd,
    stop: AtomicBool,
}

#[derive(Default)]
struct Watched {
    /// Watched processes, by slot.
    processes: HashMap<u32, Process>,
    /// Every registered request, for a lost namespace: id → target.
    all: HashMap<u64, Target>,
}

/// A watched process slot.
struct Process {
    pid: u32,
    exit: Arc<OwnedFd>,
    exited: bool,
    /// The requests to wake when it exits: each `Watch`'s id.
    watchers: Vec<u64>,
}

impl Watcher {
    /// The watcher of `ns`, its thread started.
    pub(crate) fn start(ns: &Arc<Namespace>) -> std::io::Result<Watcher> {
        let shared = Arc::new(Shared {
            watched: Mutex::default(),
            event: sys::process::event_fd()?,
            stop: AtomicBool::new(false),
        });
        // Watched from now on, before the thread runs: a deletion right after the open is seen.
        let files = sys::process::watch_paths(ns.dir(), &ns.dir().join(crate::namespace::FILE_NAME));
        let watching = files.is_some();
        let (thread_shared, thread_ns) = (shared.clone(), ns.clone());
        let spawned = std::thread::Builder::new()
            .name("latchkey-watch".into())
            .spawn(move || run(&thread_shared, &thread_ns, files));
        if watching && spawned.is_ok() {
            ns.set_watched();
        }
        Ok(Watcher { shared, thread: spawned.ok(), copy: latchkey_model::process_copy() })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Watched> {
        self.shared.watched.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        if latchkey_model::process_copy() != self.copy {
            // A forked child's copy: the thread is not here (joining it panics), and the
            // event descriptor would wake the parent's.
            std::mem::forget(self.thread.take());
            return;
        }
        self.shared.stop.store(true, Ordering::Release);
        sys::process::signal_event(self.shared.event.as_fd());
        // Joined, so that the namespace it holds is closed when the scope is.
        if let Some(thread) = self.thread.take().filter(|t| t.thread().id() != std::thread::current().id()) {
            let _ = thread.join();
        }
    }
}

/// The watcher thread; `files` watches the namespace file and directory (if inotify could).
fn run(shared: &Shared, ns: &Namespace, files: Option<OwnedFd>) {
    // The file may have changed between the open and the watch.
    if !ns.verify_identity() {
        return;
    }
    while !shared.stop.load(Ordering::Acquire) {
        let polled: Vec<(u32, Arc<OwnedFd>)> = {
            let watched = shared.watched.lock().unwrap_or_else(|e| e.into_inner());
            watched.processes.iter().filter(|(_, p)| !p.exited).map(|(&slot, p)| (slot, p.exit.clone())).collect()
        };
        let mut fds = vec![shared.event.as_fd()];
        fds.extend(files.iter().map(|f| f.as_fd()));
        fds.extend(polled.iter().map(|(_, fd)| fd.as_fd()));
        let ready = sys::process::wait_readable(&fds);
        if ready[0] {
            sys::process::clear_event(shared.event.as_fd());
        }
        let mut watched = shared.watched.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(files) = files.as_ref().filter(|_| ready[1]) {
            sys::process::drain(files.as_fd());
            if !ns.verify_identity() {
                watched.all.values().for_each(|target| target.wake());
            }
        }
        let exits = &ready[1 + usize::from(files.is_some())..];
        for ((slot, fd), _) in polled.iter().zip(exits).filter(|(_, &ready)| ready) {
            let watched = &mut *watched;
            let Some(process) = watched.processes.get_mut(slot).filter(|p| Arc::ptr_eq(&p.exit, fd)) else {
                continue;
            };
            process.exited = true;
            for id in &process.watchers {
                if let Some(target) = watched.all.get(id) {
                    target.wake();
                }
            }
        }
        watched.processes.retain(|_, p| !(p.exited && p.watchers.is_empty()));
    }
}

/// One request's registrations; dropping it unregisters them.
pub(crate) struct Watch<'a> {
    watcher: &'a Watcher,
    ns: &'a Arc<Namespace>,
    id: u64,
    slots: Vec<u32>,
}

impl<'a> Watch<'a> {
    /// Registers a request of namespace `ns`, woken through `target`; nothing watched yet.
    pub(crate) fn new(watcher: &'a Watcher, ns: &'a Arc<Namespace>, target: Target) -> Watch<'a> {
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        watcher.lock().all.insert(id, target);
        Watch { watcher, ns, id, slots: Vec::new() }
    }

    /// Watches exactly the processes in `slots` (other than this one).
    pub(crate) fn cover(&mut self, slots: &[u32]) -> Coverage {
        let ns = self.ns;
        if self.watcher.thread.is_none() {
            let dead = slots.iter().any(|&slot| !ns.shm.is_alive(slot));
            return if dead { Coverage::Dead } else { Coverage::Partial };
        }
        let mut watched = self.watcher.lock();
        let mut changed = false;
        for &slot in self.slots.iter().filter(|s| !slots.contains(s)) {
            changed |= unregister(&mut watched, slot, self.id);
        }
        self.slots.retain(|s| slots.contains(s));
        let mut coverage = Coverage::Complete;
        for &slot in slots.iter().filter(|&&s| s != ns.shm.me()) {
            let current = watched.processes.get(&slot).is_some_and(|p| !p.exited && p.pid == ns.pid_of(slot));
            if !current {
                if let Some(old) = watched.processes.remove(&slot) {
                    // Its process is gone: whoever else watched it must look again.
                    for id in old.watchers.iter().filter(|&&id| id != self.id) {
                        if let Some(target) = watched.all.get(id) {
                            target.wake();
                        }
                    }
                    changed = true;
                }
                match open(ns, slot) {
                    Ok(process) => {
                        watched.processes.insert(slot, process);
                        changed = true;
                    }
                    // (Not returned at once: an entry added above must still be polled.)
                    Err(Coverage::Dead) => {
                        coverage = Coverage::Dead;
                        break;
                    }
                    Err(_) => {
                        coverage = Coverage::Partial;
                        continue;
                    }
                }
            }
            let watchers = &mut watched.processes.get_mut(&slot).expect("present or just inserted").watchers;
            if !watchers.contains(&self.id) {
                watchers.push(self.id);
            }
            if !self.slots.contains(&slot) {
                self.slots.push(slot);
            }
        }
        drop(watched);
        if changed {
            sys::process::signal_event(self.watcher.shared.event.as_fd());
        }
        coverage
    }
}

/// A pidfd for the process in `slot`, checked to be that process.
fn open(ns: &Namespace, slot: u32) -> Result<Process, Coverage> {
    let not_watchable = || if ns.shm.is_alive(slot) { Coverage::Partial } else { Coverage::Dead };
    let pid = ns.pid_of(slot);
    if pid == 0 || !ns.shares_pid_namespace_with(slot) {
        return Err(not_watchable());
    }
    let exit = sys::process::exit_fd(pid).ok_or_else(not_watchable)?;
    // Alive, with the same pid of the same pid namespace, after the pidfd was opened, and
    // nobody taking the slot (whose pid is not in yet): the pidfd is that process. (In
    // this order: see `namespace::slots`. Exited already, yet the slot alive: a forked
    // child keeps its lock.)
    if sys::process::is_readable(exit.as_fd())
        || !ns.shm.is_alive(slot)
        || ns.claiming(slot)
        || !ns.shares_pid_namespace_with(slot)
        || ns.pid_of(slot) != pid
    {
        return Err(not_watchable());
    }
    Ok(Process { pid, exit: Arc::new(exit), exited: false, watchers: Vec::new() })
}

/// Takes watch `id` off `slot`'s list. A process nobody watches any more stays watched
/// (its pidfd open) while there are at most [`KEPT`] such, so that the next wait on it,
/// as in a lock handed back and forth, needs no system call. Returns whether the set of
/// polled pidfds changed.
fn unregister(watched: &mut Watched, slot: u32, id: u64) -> bool {
    let Some(process) = watched.processes.get_mut(&slot) else { return false };
    process.watchers.retain(|&x| x != id);
    let unwatched = watched.processes.values().filter(|p| p.watchers.is_empty()).count();
    if unwatched > KEPT {
        watched.processes.retain(|_, p| !p.watchers.is_empty());
        return true;
    }
    false
}

impl Drop for Watch<'_> {
    fn drop(&mut self) {
        let mut watched = self.watcher.lock();
        for &slot in &self.slots {
            unregister(&mut watched, slot, self.id);
        }
        watched.all.remove(&self.id);
    }
}
