//! Unit tests of the namespace's table of names: reclaiming, telling a reused record
//! apart, and taking over from a process that died in the middle of a table change.

use std::path::PathBuf;
use std::sync::atomic::Ordering;

use crate::layout::{Key, KeyState, RECORDS};
use crate::namespace::Namespace;
use crate::record::owner_of;
use crate::table::home;

/// A namespace in a fresh directory, removed afterwards.
struct Fresh {
    ns: Namespace,
    dir: PathBuf,
}

impl Fresh {
    fn new(tag: &str) -> Fresh {
        let dir = std::env::temp_dir().join(format!("latchkey-unit-{tag}-{}", std::process::id()));
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

/// A process slot nobody has claimed: dead, as far as liveness goes.
const DEAD_SLOT: u32 = 200;

#[test]
fn a_sweep_reclaims_idle_names_nobody_has_open_and_keeps_the_others() {
    let fresh = Fresh::new("sweep");
    let ns = &fresh.ns;
    let (_, idle) = ns.find_or_create("idle", 1).unwrap();
    let (_, open) = ns.find_or_create("open", 1).unwrap();
    ns.set_user(open.index, true);

    let table = ns.lock_table();
    assert_eq!(ns.sweep(), 1);
    drop(table);
    assert_eq!(ns.lookup("idle").unwrap(), None);
    assert!(!ns.still_holds(idle), "a lookup made before the reclaim is told it is stale");
    assert_eq!(ns.lookup("open").unwrap(), Some(open));
    assert!(ns.still_holds(open));
}

#[test]
fn a_record_reused_for_another_name_is_told_apart_from_the_old_one() {
    let fresh = Fresh::new("reuse");
    let ns = &fresh.ns;
    let (_, old) = ns.find_or_create("old", 1).unwrap();
    let table = ns.lock_table();
    ns.sweep();
    drop(table);
    // A name whose lookup starts at the same record takes it.
    let other = (0..).map(|i| format!("other/{i}")).find(|n| home(n.as_bytes()) == old.index).unwrap();
    let (_, new) = ns.find_or_create(&other, 1).unwrap();
    assert_eq!(new.index, old.index);
    assert_ne!(new.generation, old.generation);
    assert!(!ns.still_holds(old));
    assert_eq!(ns.lookup("old").unwrap(), None);
}

#[test]
fn reclaimed_records_become_empty_again_so_lookups_stop_early() {
    let fresh = Fresh::new("empty");
    let ns = &fresh.ns;
    for i in 0..100 {
        ns.find_or_create(&format!("name/{i}"), 1).unwrap();
    }
    let table = ns.lock_table();
    assert_eq!(ns.sweep(), 100);
    drop(table);
    let states: Vec<_> = (0..RECORDS).map(|i| Key(ns.record(i).key.load(Ordering::Relaxed)).state()).collect();
    assert!(states.iter().all(|s| *s == Some(KeyState::Empty)), "no tomb is left when no name is");
}

#[test]
fn a_lookup_undoes_the_check_of_a_reclaimer_that_died() {
    let fresh = Fresh::new("dead-reclaimer");
    let ns = &fresh.ns;
    let (_, found) = ns.find_or_create("name", 1).unwrap();
    let key = &ns.record(found.index).key;
    key.store(Key::new(KeyState::Reclaiming, owner_of(DEAD_SLOT), found.generation).0, Ordering::SeqCst);
    assert_eq!(ns.lookup("name").unwrap(), Some(found));
    assert!(ns.still_holds(found));
}

#[test]
fn the_table_lock_is_taken_over_from_a_process_that_died_holding_it() {
    let fresh = Fresh::new("dead-table-lock");
    let ns = &fresh.ns;
    let (_, found) = ns.find_or_create("name", 1).unwrap();
    ns.header().table_lock.store(owner_of(DEAD_SLOT), Ordering::SeqCst);
    let key = &ns.record(found.index).key;
    key.store(Key::new(KeyState::Reclaiming, owner_of(DEAD_SLOT), found.generation).0, Ordering::SeqCst);
    let table = ns.lock_table();
    assert_eq!(Key(key.load(Ordering::SeqCst)).state(), Some(KeyState::Ready), "the dead reclaim is undone");
    drop(table);
    assert_eq!(ns.header().table_lock.load(Ordering::SeqCst), 0);
    assert!(ns.still_holds(found));
}
