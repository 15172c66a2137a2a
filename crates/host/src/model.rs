//! Loom models of the protocol: the code of `protocol` itself, over a namespace on the
//! heap (`shm_model.rs`), each loom thread a process. Run with
//! `RUSTFLAGS="--cfg loom" cargo test -p latchkey-host --lib --release model`.
//!
//! They check, in every interleaving loom explores: mutual exclusion and the bound of a
//! semaphore; that no request sleeps for ever (loom reports a deadlock when every thread
//! is blocked) whether requests are granted, withdrawn or ceded; and that a process that
//! dies holding the record lock, in the middle of a change, is taken over and repaired
//! while the others run (the race between repair and the uncontended paths).

use loom::sync::Arc;
use loom::thread;

use latchkey_model::RWLOCK_CAPACITY as RWLOCK;

use crate::layout::EntryKind;
use crate::protocol::{awake, mark_sleeping, Fast, Grant, Polled, Rec};
use crate::shm::Shm;
use crate::sync::atomic::{AtomicU32, Ordering};
use crate::sys::futex::{self, Sleep};

/// The only record of the models.
const RECORD: u32 = 0;

fn rec(shm: &Shm) -> Rec<'_> {
    Rec::new(shm, RECORD, 0).unwrap()
}

/// Takes `permits` as the blocking wait does: the uncontended path, else the queue, a
/// nudge, a look under the lock, a sleep.
fn acquire(shm: &Shm, at: u32, permits: u32, capacity: u32) -> Grant {
    let locked = match rec(shm).try_grant_fast(at, permits, capacity) {
        Fast::Done(grant) => return grant,
        Fast::Locked(locked) => locked,
        Fast::Busy => rec(shm).lock().unwrap(),
    };
    {
        let mut locked = locked;
        if let Some(grant) = locked.try_grant(at, permits).unwrap() {
            return grant;
        }
        locked.enqueue(at, permits, false).unwrap();
    }
    wait(shm, at).expect("a request without a deadline is granted")
}

/// Waits for the queued request `at`; gives up after `looks` looks if given (`None`).
fn wait_for(shm: &Shm, at: u32, looks: Option<usize>) -> Option<Grant> {
    let word = &shm.entry(at).unwrap().word;
    for _ in 0..looks.unwrap_or(usize::MAX) {
        let seen = word.load(Ordering::Acquire);
        match rec(shm).lock().unwrap().poll(at).unwrap() {
            Polled::Granted(grant) => return Some(grant),
            Polled::Waiting(_) => {}
        }
        if let Some(sleeping) = mark_sleeping(word, seen) {
            futex::sleep(Sleep { word, expected: sleeping }, None, None);
            awake(word);
        }
    }
    None
}

fn wait(shm: &Shm, at: u32) -> Option<Grant> {
    wait_for(shm, at, None)
}

fn release(shm: &Shm, at: u32, permits: u32, token: u64) {
    match rec(shm).release_fast(at, permits, token) {
        Fast::Done(()) => {}
        Fast::Locked(mut locked) => locked.release(at).unwrap(),
        Fast::Busy => rec(shm).lock_any().unwrap().release(at).unwrap(),
    }
}

/// The `n`-th entry of the current process's arena.
fn entry(shm: &Shm, n: usize) -> u32 {
    shm.arena(shm.me()).nth(n).unwrap()
}

/// Counts holders inside a critical section: at most `bound` at once.
struct Section {
    inside: AtomicU32,
    bound: u32,
}

impl Section {
    fn new(bound: u32) -> Arc<Section> {
        Arc::new(Section { inside: AtomicU32::new(0), bound })
    }

    fn enter(&self, permits: u32) {
        let now = self.inside.fetch_add(permits, Ordering::SeqCst) + permits;
        assert!(now <= self.bound, "{now} permits held at once, of {}", self.bound);
    }

    fn leave(&self, permits: u32) {
        self.inside.fetch_sub(permits, Ordering::SeqCst);
    }
}

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    // Two preemptions explore these models in seconds; three take many minutes.
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(2);
    }
    builder.check(f);
}

/// Processes that each take a mutex and give it back: never two inside, nobody stuck.
#[test]
fn a_mutex_excludes_and_every_request_is_granted() {
    model(|| {
        let shm = Arc::new(Shm::model(3, 1, 1));
        let section = Section::new(1);
        let threads: Vec<_> = (0..3)
            .map(|slot| {
                let (shm, section) = (shm.clone(), section.clone());
                thread::spawn(move || {
                    shm.enter(slot);
                    let at = entry(&shm, 0);
                    let grant = acquire(&shm, at, 1, 1);
                    section.enter(1);
                    section.leave(1);
                    release(&shm, at, 1, grant.token);
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
    });
}

/// A semaphore of 2 with requests of 1 and 2 permits: the bound holds, and a request of
/// every permit is not passed by one that came after it.
#[test]
fn a_semaphore_keeps_its_bound() {
    model(|| {
        let shm = Arc::new(Shm::model(3, 1, 2));
        let section = Section::new(2);
        let threads: Vec<_> = [(0, 2), (1, 1), (2, 1)]
            .into_iter()
            .map(|(slot, permits)| {
                let (shm, section) = (shm.clone(), section.clone());
                thread::spawn(move || {
                    shm.enter(slot);
                    let at = entry(&shm, 0);
                    let grant = acquire(&shm, at, permits, 2);
                    section.enter(permits);
                    section.leave(permits);
                    release(&shm, at, permits, grant.token);
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
    });
}

/// A request that gives up (a timeout, a dropped future) while the holder releases: the
/// request behind it is still granted.
#[test]
fn a_withdrawal_racing_a_release_strands_nobody() {
    model(|| {
        let shm = Arc::new(Shm::model(3, 1, 1));
        shm.enter(0);
        let held = entry(&shm, 0);
        let grant = acquire(&shm, held, 1, 1);
        let leaver = {
            let shm = shm.clone();
            thread::spawn(move || {
                shm.enter(1);
                let at = entry(&shm, 0);
                rec(&shm).lock().unwrap().enqueue(at, 1, false).unwrap();
                match wait_for(&shm, at, Some(1)) {
                    Some(grant) => release(&shm, at, 1, grant.token),
                    None => rec(&shm).lock_any().unwrap().withdraw(at).unwrap(),
                }
            })
        };
        let stayer = {
            let shm = shm.clone();
            thread::spawn(move || {
                shm.enter(2);
                let at = entry(&shm, 0);
                let grant = acquire(&shm, at, 1, 1);
                release(&shm, at, 1, grant.token);
            })
        };
        release(&shm, held, 1, grant.token);
        leaver.join().unwrap();
        stayer.join().unwrap();
    });
}

/// A holder that cedes to a waiting request while another arrives: both get the lock in
/// turn, and the ceder gets it back.
#[test]
fn a_cede_hands_over_and_comes_back() {
    model(|| {
        let shm = Arc::new(Shm::model(2, 1, 1));
        shm.enter(0);
        let at = entry(&shm, 0);
        let grant = acquire(&shm, at, 1, 1);
        let waiter = {
            let shm = shm.clone();
            thread::spawn(move || {
                shm.enter(1);
                let at = entry(&shm, 0);
                let grant = acquire(&shm, at, 1, 1);
                release(&shm, at, 1, grant.token);
            })
        };
        let queued = rec(&shm).lock().unwrap().cede(at, false).unwrap();
        let token = match queued {
            Some(_) => wait(&shm, at).unwrap().token,
            None => grant.token,
        };
        release(&shm, at, 1, token);
        waiter.join().unwrap();
    });
}

/// A process dies holding the record lock in the middle of taking permits (its entry says
/// `Hold`, nothing else is written), while another process takes the lock: the other
/// takes the record lock over, rebuilds the record, and is granted.
#[test]
fn a_process_dead_inside_the_record_lock_is_taken_over() {
    model(|| {
        let shm = Arc::new(Shm::model(2, 1, 1));
        let dying = {
            let shm = shm.clone();
            thread::spawn(move || {
                shm.enter(0);
                let locked = rec(&shm).lock().unwrap();
                let e = shm.entry(entry(&shm, 0)).unwrap();
                e.record.store(RECORD, Ordering::Relaxed);
                e.permits.store(1, Ordering::Relaxed);
                e.state.store(EntryKind::Hold.bits(), Ordering::Release);
                // Dies here: the lock stays taken, the entry is in no list.
                std::mem::forget(locked);
                shm.die(0);
            })
        };
        let other = {
            let shm = shm.clone();
            thread::spawn(move || {
                shm.enter(1);
                let at = entry(&shm, 0);
                let grant = acquire(&shm, at, 1, 1);
                release(&shm, at, 1, grant.token);
            })
        };
        dying.join().unwrap();
        other.join().unwrap();
    });
}

/// A reader-writer lock: a writer queued behind a reader holds back the reader after it,
/// and everyone gets in.
#[test]
fn a_writer_is_not_passed_by_a_later_reader() {
    model(|| {
        let shm = Arc::new(Shm::model(3, 1, RWLOCK));
        let section = Section::new(RWLOCK);
        let threads: Vec<_> = [(0, 1), (1, RWLOCK), (2, 1)]
            .into_iter()
            .map(|(slot, permits)| {
                let (shm, section) = (shm.clone(), section.clone());
                thread::spawn(move || {
                    shm.enter(slot);
                    let at = entry(&shm, 0);
                    let grant = acquire(&shm, at, permits, RWLOCK);
                    section.enter(permits);
                    section.leave(permits);
                    release(&shm, at, permits, grant.token);
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
    });
}
