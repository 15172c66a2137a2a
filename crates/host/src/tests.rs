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
