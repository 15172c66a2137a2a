//! The multiplexer: one thread per namespace that sleeps for every async wait of the
//! process, however many there are.
//!
//! Every nudge of a request that is waited for asynchronously also rings its process's
//! doorbell (a word of its process slot; see `protocol::wake`). The thread sleeps on the
//! doorbell and on the namespace's alarm; when either changes, it wakes the task of
//! every registered wait whose word changed since the task last looked. A task looks
//! again on its own (`future`), so the thread runs no lock logic.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::Waker;
use std::time::{Duration, Instant};

use crate::namespace::Namespace;
use crate::protocol::{awake, bump_and_wake, mark_sleeping};
use crate::sync::atomic::{AtomicU32, Ordering};
use crate::sys::futex::wake_private;
use crate::sys::futex::{self, Sleep};

/// The multiplexer of one namespace.
pub(crate) struct Mux {
    shared: Arc<Shared>,
    /// Its thread, or why it could not start.
    thread: std::result::Result<std::thread::JoinHandle<()>, String>,
    /// The copy of the process the thread runs in ([`latchkey_model::process_copy`]).
    copy: (u32, u64),
}

#[derive(Default)]
struct Shared {
    waits: Mutex<HashMap<u64, Registered>>,
    stop: AtomicBool,
    /// The namespace, once the thread runs: to ring the doorbell that stops it.
    ns: OnceLock<Arc<Namespace>>,
}

/// A wait whose task sleeps until its word changes from `seen`, or until `recheck`.
struct Registered {
    word: *const AtomicU32,
    seen: u32,
    waker: Waker,
    recheck: Option<Instant>,
}

// SAFETY: `word` lives in the namespace mapping, which the thread keeps alive (it holds
// the namespace), and is only read atomically.
unsafe impl Send for Registered {}

impl Mux {
    /// Registers (or renews) wait `id`: its task is woken once `word` no longer holds
    /// `seen`, or after `recheck`. The caller then looks at the word again itself, so a
    /// change before the registration is not missed. Fails if the thread cannot start.
    pub(crate) fn register(
        &self,
        ns: &Arc<Namespace>,
        id: u64,
        word: &AtomicU32,
        seen: u32,
        waker: &Waker,
        recheck: Option<Duration>,
    ) -> std::io::Result<()> {
        if let Err(why) = &self.thread {
            return Err(std::io::Error::other(why.clone()));
        }
        let recheck = recheck.map(|d| Instant::now() + d);
        let registered = Registered { word, seen, waker: waker.clone(), recheck };
        self.shared.waits.lock().unwrap_or_else(|e| e.into_inner()).insert(id, registered);
        if recheck.is_some() {
            // The thread may sleep without a time limit: make it set one.
            if let Ok(slot) = ns.shm.slot(ns.shm.me()) {
                bump_and_wake(&slot.doorbell);
            }
        }
        Ok(())
    }

    /// Forgets wait `id`.
    pub(crate) fn unregister(&self, id: u64) {
        self.shared.waits.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
    }

    /// The multiplexer of `ns`, its thread started.
    pub(crate) fn start(ns: &Arc<Namespace>) -> Mux {
        let shared = Arc::new(Shared::default());
        let (thread_shared, thread_ns) = (shared.clone(), ns.clone());
        let spawned =
            std::thread::Builder::new().name("latchkey-mux".into()).spawn(move || serve(&thread_shared, &thread_ns));
        if spawned.is_ok() {
            let _ = shared.ns.set(ns.clone());
        }
        Mux { shared, thread: spawned.map_err(|e| e.to_string()), copy: latchkey_model::process_copy() }
    }
}

impl Drop for Mux {
    fn drop(&mut self) {
        if latchkey_model::process_copy() != self.copy {
            // A forked child's copy: the thread is not here (joining it panics), and the
            // memory it would wake is the parent's.
            std::mem::forget(std::mem::replace(&mut self.thread, Err(String::new())));
            return;
        }
        self.shared.stop.store(true, std::sync::atomic::Ordering::Release);
        // Wakes the thread through the namespace's alarm, which is this process's own
        // memory (the doorbell, in the mapping, may be gone if the file was cut short).
        if let Some(ns) = self.shared.ns.get() {
            let alarm = ns.shm.registration().alarm();
            alarm.fetch_add(1, Ordering::AcqRel);
            wake_private(alarm);
            // Without futex_waitv the thread does not watch the alarm: ring its doorbell
            // too (it also wakes every second then, for a mapping cut short).
            if let Ok(slot) = ns.shm.slot(ns.shm.me()) {
                bump_and_wake(&slot.doorbell);
            }
        }
        // Joined, so that the namespace it holds is closed when the scope is.
        if let Ok(thread) = std::mem::replace(&mut self.thread, Err(String::new())) {
            if thread.thread().id() != std::thread::current().id() {
                let _ = thread.join();
            }
        }
    }
}

/// The multiplexer thread.
fn serve(shared: &Shared, ns: &Arc<Namespace>) {
    let Ok(slot) = ns.shm.slot(ns.shm.me()) else { return };
    let (doorbell, alarm) = (&slot.doorbell, ns.shm.registration().alarm());
    while !shared.stop.load(std::sync::atomic::Ordering::Acquire) {
        let rung = doorbell.load(Ordering::Acquire);
        let alarmed = alarm.load(Ordering::Acquire);
        let now = Instant::now();
        let mut next_recheck = None;
        let woken: Vec<Waker> = {
            let mut waits = shared.waits.lock().unwrap_or_else(|e| e.into_inner());
            let lost = ns.shm.is_lost();
            let due: Vec<u64> = waits
                .iter()
                .filter(|(_, w)| {
                    // SAFETY: see `Send`.
                    let changed = unsafe { &*w.word }.load(Ordering::Acquire) != w.seen;
                    lost || changed || w.recheck.is_some_and(|at| at <= now)
                })
                .map(|(&id, _)| id)
                .collect();
            let woken = due.iter().filter_map(|id| waits.remove(id)).map(|w| w.waker).collect();
            next_recheck = waits.values().filter_map(|w| w.recheck).min().or(next_recheck);
            woken
        };
        for waker in woken {
            // A waker is the executor's code: a panic in it must not stop this thread.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| waker.wake()));
        }
        if let Some(sleeping) = mark_sleeping(doorbell, rung) {
            let mut timeout = next_recheck.map(|at| at.saturating_duration_since(Instant::now()));
            if !futex::has_waitv() {
                // The alarm is not watched without futex_waitv: look at it every second.
                timeout = Some(timeout.map_or(Duration::from_secs(1), |t| t.min(Duration::from_secs(1))));
            }
            futex::sleep(
                Sleep { word: doorbell, expected: sleeping },
                Some(Sleep { word: alarm, expected: alarmed }),
                timeout,
            );
            awake(doorbell);
        }
    }
}
