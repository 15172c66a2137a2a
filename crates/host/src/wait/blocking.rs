//! The blocking wait: the calling thread spins briefly on its request's word, then sleeps
//! on it (and on the namespace's alarm) until nudged, or until a process it depends on
//! dies (its watcher wakes it), or until the deadline.

use std::sync::Arc;
use std::time::Instant;

use latchkey_model::Result;

use super::watch::{Coverage, Target, Watch, LIVENESS_PERIOD};
use super::Waits;
use crate::namespace::Namespace;
use crate::protocol::{awake, lost, mark_sleeping, Grant, Polled, Rec};
use crate::sync::atomic::Ordering;
use crate::sys::futex::{self, Sleep};

/// Spin iterations (pauses) before a request first sleeps: a holder running on another
/// core often releases by then, and a grant seen while spinning saves the futex wake-up
/// and the context switch. A pause takes 10 to 140 cycles depending on the processor:
/// 27 ns on the project's machine, so about 110 µs there.
const SPINS: u32 = 4_000;

/// Waits until the queued request in entry `at` of `rec` is granted (`Some`), or until
/// `deadline` (`None`: the request is withdrawn and the entry given back). `queued` is
/// the request's word as it was when it was queued.
pub(crate) fn wait_blocking(
    ns: &Arc<Namespace>,
    waits: &Waits,
    rec: Rec<'_>,
    at: u32,
    queued: u32,
    deadline: Option<Instant>,
) -> Result<Option<Grant>> {
    let result = wait(ns, waits, rec, at, queued, deadline);
    if !matches!(result, Ok(Some(_))) {
        withdraw(ns, rec, at);
    }
    result
}

/// Takes the request out of the queue and gives its entry back (kept, unused, if the
/// namespace is gone).
pub(crate) fn withdraw(ns: &Namespace, rec: Rec<'_>, at: u32) {
    if rec.lock_any().and_then(|mut locked| locked.withdraw(at)).is_ok() {
        ns.put_entry(at);
    }
}

fn wait(
    ns: &Arc<Namespace>,
    waits: &Waits,
    rec: Rec<'_>,
    at: u32,
    queued: u32,
    deadline: Option<Instant>,
) -> Result<Option<Grant>> {
    let shm = &ns.shm;
    let word = &shm.entry(at)?.word;
    let alarm = shm.registration().alarm();
    // Watch for the first nudge before anything else: the holder, running on another
    // core, often releases within microseconds.
    spin_while(word, queued);
    let mut watch: Option<Watch<'_>> = None;
    loop {
        // Read before looking: a nudge after the look changes it, and the sleep returns.
        let seen = word.load(Ordering::Acquire);
        let seen_alarm = alarm.load(Ordering::Acquire);
        let dependencies = match rec.lock()?.poll(at)? {
            Polled::Granted(grant) => return Ok(Some(grant)),
            Polled::Waiting(dependencies) => dependencies,
        };
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            return Ok(None);
        }
        let watch = match &mut watch {
            Some(watch) => watch,
            // The first sleep of a slow path: is the file still the one mapped?
            None if !ns.verify_identity() => return Err(lost()),
            None => watch.insert(Watch::new(&waits.watcher, ns, Target::new(word, None))),
        };
        let recheck = match watch.cover(&dependencies) {
            Coverage::Dead => {
                rec.lock()?.repair()?;
                continue;
            }
            Coverage::Complete => None,
            Coverage::Partial => Some(LIVENESS_PERIOD),
        };
        let until_deadline = deadline.map(|d| d.saturating_duration_since(now));
        let timeout = match (recheck, until_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Some(sleeping) = mark_sleeping(word, seen) {
            let alarm = Sleep { word: alarm, expected: seen_alarm };
            futex::sleep(Sleep { word, expected: sleeping }, Some(alarm), timeout);
            awake(word);
            // A sleep may have been long: is the file still the one mapped?
            if !ns.verify_identity() {
                return Err(lost());
            }
        }
    }
}

/// Spins while `word` holds `seen`, for a while. Returns whether it changed.
fn spin_while(word: &crate::sync::atomic::AtomicU32, seen: u32) -> bool {
    for _ in 0..SPINS {
        if word.load(Ordering::Acquire) != seen {
            return true;
        }
        crate::sync::spin_loop();
    }
    false
}
