//! Death notices: a sleeping waiter is nudged when a process it depends on dies, so that
//! it repairs the record at once instead of waking up now and then to check.
//!
//! Each namespace of this process has one watcher thread, started at the first wait. It
//! polls a pidfd (readable once the process has exited) for every other process that a
//! local waiter depends on, and nudges those waiters' words when one exits. A pidfd is
//! trusted only once the process's slot is seen alive (its liveness lock held) with the
//! same pid after the pidfd was opened, so a reused pid cannot stand in for a dead
//! process. Where that cannot be shown (another pid namespace, no pidfds, a slot kept
//! alive by a forked child), the waiter falls back to checking every `LIVENESS_PERIOD`.

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once};

use crate::namespace::Namespace;
use crate::sys;

/// How many processes stay watched after the last waiter that needed them is done.
const KEPT: usize = 16;

/// How well a waiter's dependencies are watched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Coverage {
    /// Each one's death will nudge the waiter: it may sleep without a time limit.
    Complete,
    /// Some cannot be watched: the waiter must check now and then.
    Partial,
    /// One is dead already: repair first.
    Dead,
}

/// The watcher of one namespace.
pub(crate) struct Watcher {
    shared: Arc<Shared>,
    started: Once,
}

struct Shared {
    watched: Mutex<HashMap<u32, Watched>>,
    /// Wakes the thread to poll a new set of pidfds, or to stop.
    event: OwnedFd,
    stop: AtomicBool,
}

/// A watched process slot.
struct Watched {
    pid: u32,
    exit: Arc<OwnedFd>,
    exited: bool,
    /// The waiters to nudge when it exits: each `Watch`'s id and word.
    words: Vec<(u64, Word)>,
}

/// A word in the namespace mapping that a waiter sleeps on, and how to nudge it.
#[derive(Clone, Copy)]
struct Word(*const AtomicU32, fn(&AtomicU32));

impl Word {
    /// Nudges the waiters sleeping on the word.
    ///
    /// # Safety
    /// The word must be registered, and the `watched` lock held (see below).
    unsafe fn nudge(self) {
        // SAFETY: registered, so the mapping is alive (see `Send`); the caller holds the lock.
        (self.1)(unsafe { &*self.0 });
    }
}

// SAFETY: a `Word` is only dereferenced by the watcher thread under the `watched` lock,
// while registered; a `Watch` unregisters its word (under the same lock) before the wait
// that owns it ends, and that wait keeps the mapping alive.
unsafe impl Send for Word {}

impl Watcher {
    pub(crate) fn new() -> std::io::Result<Watcher> {
        let shared =
            Arc::new(Shared { watched: Mutex::default(), event: sys::event_fd()?, stop: AtomicBool::new(false) });
        Ok(Watcher { shared, started: Once::new() })
    }

    fn start(&self) {
        self.started.call_once(|| {
            let shared = self.shared.clone();
            std::thread::Builder::new()
                .name("latchkey-watch".into())
                .spawn(move || run(&shared))
                .expect("cannot start the latchkey watcher thread");
        });
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        sys::signal_event(self.shared.event.as_fd());
    }
}

/// The watcher thread.
fn run(shared: &Shared) {
    while !shared.stop.load(Ordering::Acquire) {
        let polled: Vec<(u32, Arc<OwnedFd>)> = {
            let watched = shared.watched.lock().expect("watch table lock");
            watched.iter().filter(|(_, w)| !w.exited).map(|(&slot, w)| (slot, w.exit.clone())).collect()
        };
        let mut fds = vec![shared.event.as_fd()];
        fds.extend(polled.iter().map(|(_, fd)| fd.as_fd()));
        let ready = sys::wait_readable(&fds);
        if ready[0] {
            sys::clear_event(shared.event.as_fd());
        }
        let mut watched = shared.watched.lock().expect("watch table lock");
        for ((slot, fd), _) in polled.iter().zip(&ready[1..]).filter(|(_, &ready)| ready) {
            let Some(w) = watched.get_mut(slot).filter(|w| Arc::ptr_eq(&w.exit, fd)) else { continue };
            w.exited = true;
            for (_, word) in &w.words {
                // SAFETY: registered; we hold the lock.
                unsafe { word.nudge() };
            }
        }
        watched.retain(|_, w| !(w.exited && w.words.is_empty()));
    }
}

/// One waiter's registrations; dropping it unregisters them.
pub(crate) struct Watch<'a> {
    ns: &'a Namespace,
    /// Tells this watch from another on the same word (a waiter slot used again while an
    /// earlier waiter's thread has not yet let go of it).
    id: u64,
    word: Word,
    slots: Vec<u32>,
}

impl<'a> Watch<'a> {
    /// Nothing watched yet for the waiter sleeping on `word`, which `nudge` wakes.
    pub(crate) fn new(ns: &'a Namespace, word: &'a AtomicU32, nudge: fn(&AtomicU32)) -> Watch<'a> {
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        Watch { ns, id: NEXT_ID.fetch_add(1, Ordering::Relaxed), word: Word(word, nudge), slots: Vec::new() }
    }

    /// Watches exactly the processes in `slots` (other than this one).
    pub(crate) fn cover(&mut self, slots: &[u32]) -> Coverage {
        let watcher = self.ns.watcher();
        let mut watched = watcher.shared.watched.lock().expect("watch table lock");
        let mut changed = false;
        for &slot in self.slots.iter().filter(|s| !slots.contains(s)) {
            changed |= unregister(&mut watched, slot, self.id);
        }
        self.slots.retain(|s| slots.contains(s));
        let mut coverage = Coverage::Complete;
        for &slot in slots.iter().filter(|&&s| s != self.ns.slot()) {
            let current = watched.get(&slot).is_some_and(|w| !w.exited && w.pid == self.ns.pid_of(slot));
            if !current {
                if let Some(old) = watched.remove(&slot) {
                    // Its process is gone: whoever else watched it must look again.
                    for (_, word) in old.words.iter().filter(|(id, _)| *id != self.id) {
                        // SAFETY: registered; we hold the lock.
                        unsafe { word.nudge() };
                    }
                    changed = true;
                }
                match self.open(slot) {
                    Ok(entry) => {
                        watched.insert(slot, entry);
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
            let words = &mut watched.get_mut(&slot).expect("present or just inserted").words;
            if !words.iter().any(|(id, _)| *id == self.id) {
                words.push((self.id, self.word));
            }
            if !self.slots.contains(&slot) {
                self.slots.push(slot);
            }
        }
        drop(watched);
        if changed {
            watcher.start();
            sys::signal_event(watcher.shared.event.as_fd());
        }
        coverage
    }

    /// A pidfd for the process in `slot`, checked to be that process.
    fn open(&self, slot: u32) -> Result<Watched, Coverage> {
        let ns = self.ns;
        let not_watchable = || if ns.is_alive(slot) { Coverage::Partial } else { Coverage::Dead };
        let pid = ns.pid_of(slot);
        if pid == 0 || !ns.shares_pid_namespace_with(slot) {
            return Err(not_watchable());
        }
        let exit = sys::exit_fd(pid).ok_or_else(not_watchable)?;
        // Alive, with the same pid, after the pidfd was opened: the pidfd is that process.
        // (Exited already, yet the slot alive: a forked child keeps its lock.)
        if sys::is_readable(exit.as_fd()) || !ns.is_alive(slot) || ns.pid_of(slot) != pid {
            return Err(not_watchable());
        }
        Ok(Watched { pid, exit: Arc::new(exit), exited: false, words: Vec::new() })
    }
}

/// Takes watch `id` off `slot`'s list. A process nobody watches any more stays watched
/// (its pidfd open) while there are at most [`KEPT`] such, so that the next wait on it,
/// as in a lock handed back and forth, needs no system call. Returns whether the set of
/// polled pidfds changed.
fn unregister(watched: &mut HashMap<u32, Watched>, slot: u32, id: u64) -> bool {
    let Some(w) = watched.get_mut(&slot) else { return false };
    w.words.retain(|(x, _)| *x != id);
    let unwatched = watched.values().filter(|w| w.words.is_empty()).count();
    if unwatched > KEPT {
        watched.retain(|_, w| !w.words.is_empty());
        return true;
    }
    false
}

impl Drop for Watch<'_> {
    fn drop(&mut self) {
        if self.slots.is_empty() {
            return;
        }
        let mut watched = self.ns.watcher().shared.watched.lock().expect("watch table lock");
        for &slot in &self.slots {
            unregister(&mut watched, slot, self.id);
        }
    }
}
