//! Unit tests of the namespace: the table of names (reclaiming, telling a reused record
//! apart, taking over from a process that died in the middle of a table change), and
//! repair of what a process left at the worst moment. Several come from a review that
//! found each bug with a failing test first.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use latchkey_model::RawScope;

use crate::layout::*;
use crate::namespace::Namespace;
use crate::record::owner_of;
use crate::scope::HostScope;
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

/// A hang guard: every wait below ends long before, or the test has found a bug.
const HANG: Duration = Duration::from_secs(30);

/// The worker process: takes one permit of "n" (of 2) in the namespace in
/// `LATCHKEY_HOST_UNIT_WORKER`, says `held`, and holds it until killed.
#[test]
fn worker() {
    let Ok(dir) = std::env::var("LATCHKEY_HOST_UNIT_WORKER") else { return };
    let scope = HostScope::open(Some(Path::new(&dir))).unwrap();
    let lock = RawScope::open(&scope, "n", 2).unwrap();
    let _lease = lock.try_acquire(1).unwrap().expect("a free permit"); // held until killed
    println!("held");
    std::thread::sleep(Duration::from_secs(600));
}

/// A worker holding a permit; killed and reaped on drop.
struct Holder(Child);

impl Holder {
    fn start(dir: &Path) -> Holder {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "tests::worker", "--nocapture", "--test-threads=1"])
            .env("LATCHKEY_HOST_UNIT_WORKER", dir)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut reader = BufReader::new(child.stdout.as_mut().unwrap());
        let mut line = String::new();
        while !line.trim_end().ends_with("held") {
            line.clear();
            assert!(reader.read_line(&mut line).unwrap() > 0, "the worker ended before it held");
        }
        Holder(child)
    }

    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        self.kill();
    }
}

#[test]
fn a_waiter_whose_first_look_finds_a_dead_holder_still_watches_the_live_one() {
    // Its first `cover` added a watch on the live holder, then found the dead one: the
    // watcher thread must still be started for the live one.
    let fresh = Fresh::new("cover-dead");
    let scope = HostScope::open(Some(&fresh.dir)).unwrap();
    let lock = RawScope::open(&scope, "n", 2).unwrap();
    let (mut live, mut dead) = (Holder::start(&fresh.dir), Holder::start(&fresh.dir));
    dead.kill();
    let waiter = std::thread::spawn(move || lock.acquire_blocking(2, Some(Instant::now() + HANG)).is_ok());
    std::thread::sleep(Duration::from_millis(200)); // asleep, the dead holder repaired
    live.kill();
    assert!(waiter.join().unwrap(), "the death of the live holder went unnoticed");
}

#[test]
fn a_release_with_every_holder_slot_taken_grants_the_waiter() {
    let fresh = Fresh::new("slots");
    let scope = HostScope::open(Some(&fresh.dir)).unwrap();
    let lock = RawScope::open(&scope, "m", HOLDERS as u32).unwrap();
    let mut leases: Vec<_> = (0..HOLDERS).map(|_| lock.try_acquire(1).unwrap().unwrap()).collect();
    let waiting = lock.clone();
    let waiter = std::thread::spawn(move || waiting.acquire_blocking(1, Some(Instant::now() + HANG)).is_ok());
    while lock.inspect().unwrap().waiters != 1 {
        std::thread::yield_now();
    }
    lock.release(leases.pop().unwrap()).unwrap();
    assert!(waiter.join().unwrap(), "a permit and a holder slot were free, and the waiter was not granted");
}

#[test]
fn a_change_of_capacity_cut_short_by_a_crash_leaves_the_name_usable() {
    let fresh = Fresh::new("capacity");
    let ns = &fresh.ns;
    let (rec, _) = ns.find_or_create("x", 1).unwrap();
    // What a SIGKILL leaves after the compare-and-swap from idle to QUEUED, before the
    // new capacity is stored: no permit, nobody holding, nobody waiting.
    rec.r.state.store(QUEUED, Ordering::SeqCst);
    rec.r.lock.store(owner_of(DEAD_SLOT), Ordering::SeqCst);
    let grant = rec.acquire_blocking(1, Some(Instant::now() + HANG), &|| false).unwrap();
    assert!(grant.is_some(), "state after repair: {:#x}", rec.r.state.load(Ordering::SeqCst));
}

#[test]
fn a_grant_cut_short_between_its_holder_slot_and_its_waiter_is_published_by_repair() {
    let fresh = Fresh::new("pending");
    let ns = &fresh.ns;
    let (rec, _) = ns.find_or_create("y", 1).unwrap();
    let me = owner_of(ns.slot());
    // The granter died after finishing holder slot 0 for waiter 0, before publishing.
    let waiter = &rec.r.waiters[0];
    waiter.permits.store(1, Ordering::SeqCst);
    waiter.ticket.store(0, Ordering::SeqCst);
    waiter.granted.store((1 << 31) | 1, Ordering::SeqCst); // PENDING, holder slot 0
    waiter.owner.store(me, Ordering::SeqCst);
    let holder = &rec.r.holders[0];
    holder.owner.store(me, Ordering::SeqCst);
    holder.permits.store(1, Ordering::SeqCst);
    holder.token.store(1, Ordering::SeqCst);
    rec.r.state.store(holder_bit(0), Ordering::SeqCst);
    rec.r.lock.store(owner_of(DEAD_SLOT), Ordering::SeqCst);
    drop(rec.lock()); // taken over from the dead granter: repairs
    let granted = rec.await_grant(0, Some(Instant::now() + HANG), &|| false);
    assert!(granted, "word after repair: {:#x}", waiter.granted.load(Ordering::SeqCst));
}
