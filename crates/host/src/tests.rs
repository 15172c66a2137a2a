//! Unit tests of the layers below the scope, on a real namespace in a fresh directory.

use std::path::PathBuf;
use std::sync::atomic::AtomicUsize;

use crate::namespace::Namespace;
use crate::protocol::{lock_word, try_lock_word};
use crate::sync::atomic::Ordering;

/// A namespace in a fresh directory, removed afterwards.
pub(crate) struct Fresh {
    pub ns: Namespace,
    dir: PathBuf,
}

impl Fresh {
    pub(crate) fn new() -> Fresh {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("latchkey-unit-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let ns = Namespace::open(Some(&dir)).expect("open a fresh namespace");
        Fresh { ns, dir }
    }
}

impl Drop for Fresh {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn a_try_lock_that_fails_leaves_the_owner_holding_the_lock() {
    let fresh = Fresh::new();
    let shm = &fresh.ns.shm;
    let word = &shm.header().grow_lock;
    let held = lock_word(shm, word, || Ok(())).unwrap();
    assert!(try_lock_word(shm, word).is_none(), "the lock is held");
    assert_ne!(word.load(Ordering::Acquire), 0, "a failed try must not unlock the owner's lock");
    drop(held);
    assert_eq!(word.load(Ordering::Acquire), 0);
    assert!(try_lock_word(shm, word).is_some());
}

/// Review: a corrupted queue must give an error, never a hang. `Locked::poll`
/// (protocol/ops.rs) walks the queue from its head to the request, adding up the permits
/// of the requests ahead, and stops only at the request, at the end of the queue or once
/// the permits outgrow what is free: a queue that loops through entries of 0 permits (a
/// corrupted file) keeps it walking forever, holding the record lock.
#[test]
fn a_corrupted_queue_that_loops_gives_an_error_not_a_hang() {
    use crate::protocol::Rec;

    let fresh: &'static Fresh = Box::leak(Box::new(Fresh::new()));
    let ns = &fresh.ns;
    let found = ns.open_name("x", 1).unwrap();
    let rec = Rec::new(&ns.shm, found.index, found.generation).unwrap();
    let (ahead, behind) = (ns.take_entry().unwrap(), ns.take_entry().unwrap());
    rec.lock().unwrap().enqueue(ahead, 1, false).unwrap();
    rec.lock().unwrap().enqueue(behind, 1, false).unwrap();
    // The corruption: the request ahead asks for nothing and is followed by itself.
    let e = ns.shm.entry(ahead).unwrap();
    e.permits.store(0, Ordering::Release);
    e.next.store(ahead, Ordering::Release);
    let (send, polled) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let result = rec.lock().and_then(|mut locked| locked.poll(behind).map(|p| format!("{p:?}")));
        let _ = send.send(result.map_err(|e| e.to_string()));
    });
    match polled.recv_timeout(std::time::Duration::from_secs(10)) {
        Ok(result) => assert!(result.is_err(), "a request behind a looping queue was polled: {result:?}"),
        Err(_) => panic!("polling a request behind a corrupted, looping queue did not return within 10 s"),
    }
}

/// Issue 8, item 4: a lease dropped without release, then the namespace closed (its slot
/// marked free): the next process in the slot used to become the holder, and `inspect`
/// showed it holding. The slot's next owner releases what is left in its arena.
#[test]
fn a_hold_left_in_a_closed_slot_is_released_by_the_slots_next_owner() {
    use latchkey_model::RawScope;

    let dir = std::env::temp_dir().join(format!("latchkey-unit-leftover-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    {
        let scope = crate::HostScope::open(Some(&dir)).unwrap();
        let lock = scope.open("m", 1).unwrap();
        let lease = lock.try_acquire(1).unwrap().expect("free");
        // Dropped without a release, as only a scope's own code could do it now.
        drop(lease);
        assert!(lock.inspect().unwrap().is_locked());
    }
    // The namespace is closed (nothing else holds it): its slot is free again.
    let scope = crate::HostScope::open(Some(&dir)).unwrap();
    let state = scope.inspect("m").unwrap();
    assert!(!state.is_locked(), "the hold of the slot's last owner was released: {state:?}");
    let lock = scope.open("m", 1).unwrap();
    assert!(lock.try_acquire(1).unwrap().is_some(), "and the lock can be taken");
    drop((lock, scope));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Review 2: **a lock word left by a dead process comes back to life 2048 claims of its
/// slot later.** A lock word names its owner's slot and the slot's incarnation *modulo
/// 2^11* (`layout::Owner`), and `Shm::owner_alive` (shm.rs) judges the owner alive if the
/// slot's present incarnation matches modulo 2^11 and the slot's liveness lock is held.
/// Every claim of a slot bumps its incarnation, clean closes included, so after 2048
/// processes took slot 0 in turn (a CLI or cron job run 2048 times), the lock word left
/// by a process killed inside a record lock names the 2049th process of slot 0, alive and
/// idle: every other process that needs the name waits for it forever (and the 2049th
/// itself deadlocks on its own "lock", see the next test).
///
/// Here the processes are namespaces opened in turn in this process (each with its own
/// open file description, so its own liveness lock).
#[test]
fn a_dead_owners_record_lock_passes_for_held_by_the_slots_2049th_process() {
    let (dir, x) = dead_owner_of_x("wrap-other");
    let live = same_incarnation_in_slot_0(&dir, x.1);
    // Another process, in slot 1, needs `x`.
    let other: &'static Namespace = Box::leak(Box::new(Namespace::open(Some(&dir)).unwrap()));
    assert_eq!(other.shm.me(), 1);
    let got = hangs_or(move || other.open_name("x", 1).map(|_| ()));
    drop(live);
    let _ = std::fs::remove_dir_all(&dir);
    match got {
        Some(result) => assert!(result.is_ok(), "{result:?}"),
        None => panic!(
            "a process waited 10 s for the record lock of x, left by a process killed in slot 0 2048 claims of that \
             slot ago: the lock word passes for held by the slot's present (idle) process"
        ),
    }
}

/// Review 2: the same, seen by the slot's 2049th process itself: `owner_alive` takes a
/// word with its own slot and incarnation (modulo 2^11) for its own lock, held by another
/// of its threads, and waits for itself forever.
#[test]
fn the_slots_2049th_process_deadlocks_on_a_record_lock_its_dead_predecessor_left() {
    let (dir, x) = dead_owner_of_x("wrap-self");
    let live: &'static Namespace = Box::leak(Box::new(same_incarnation_in_slot_0(&dir, x.1)));
    let got = hangs_or(move || live.open_name("x", 1).map(|_| ()));
    let _ = std::fs::remove_dir_all(&dir);
    match got {
        Some(result) => assert!(result.is_ok(), "{result:?}"),
        None => panic!(
            "the 2049th process of slot 0 waited 10 s for the record lock of x, left by the process killed in slot 0 \
             2048 claims before: it takes the lock word for its own"
        ),
    }
}

/// A fresh namespace directory where a process in slot 0 "died" inside the record lock of
/// `x` (its guard forgotten, its namespace closed): the directory, and (x's record,
/// the dead process's incarnation).
fn dead_owner_of_x(what: &str) -> (PathBuf, (u32, u32)) {
    let dir = std::env::temp_dir().join(format!("latchkey-unit-{what}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let ns = Namespace::open(Some(&dir)).unwrap();
    assert_eq!(ns.shm.me(), 0);
    let incarnation = ns.shm.slot(0).unwrap().incarnation.load(Ordering::Acquire);
    let found = ns.open_name("x", 1).unwrap();
    ns.close_name(found.index);
    let rec = crate::protocol::Rec::new(&ns.shm, found.index, found.generation).unwrap();
    std::mem::forget(rec.lock().unwrap()); // killed inside the record lock
    drop(ns);
    (dir, (found.index, incarnation))
}

/// Opens the namespace of `dir` again and again, each closed before the next (taking slot
/// 0 each time), until slot 0's incarnation is `incarnation` modulo 2^11; returns that one.
fn same_incarnation_in_slot_0(dir: &std::path::Path, incarnation: u32) -> Namespace {
    for _ in 0..4096 {
        let ns = Namespace::open(Some(dir)).unwrap();
        assert_eq!(ns.shm.me(), 0, "slot 0 is free: taken again");
        let now = ns.shm.slot(0).unwrap().incarnation.load(Ordering::Acquire);
        if now != incarnation && (now ^ incarnation) & 0x7ff == 0 {
            return ns;
        }
    }
    panic!("slot 0's incarnation never came back to {incarnation} modulo 2^11");
}

/// Runs `f` in a thread: its result, or `None` if it has not returned within 10 s.
fn hangs_or<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let (send, got) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = send.send(f());
    });
    got.recv_timeout(std::time::Duration::from_secs(10)).ok()
}
