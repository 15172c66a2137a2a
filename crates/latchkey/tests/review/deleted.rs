//! A namespace deleted (`rm -rf` of its directory) under a process that used it: the
//! process must never grant a name in the dead namespace while a process that opened the
//! directory afresh holds it. Only slow paths check the file's identity (the first
//! handle of a name, the first sleep of a wait), and the watcher that notices a deletion
//! runs only once the process has waited; so a lock by name, or a handle opened before,
//! is granted in the dead namespace: two holders.

use std::fs;

use latchkey::{ErrorKind, Scope};

use super::{Dirs, Proc};

/// A fresh process opens the directory again and takes `name`; returns it, holding.
fn fresh_holder(dirs: &Dirs, name: &str) -> Proc {
    let mut fresh = Proc::spawn(&["hold", &dirs.url(), name]);
    let line = fresh.line("its hold");
    assert!(line.starts_with("held "), "a process that opened the directory afresh could not take {name}: {line}");
    fresh
}

/// Asserts that what the old scope got is no grant.
#[track_caller]
fn no_second_holder(what: &str, got: latchkey::Result<Option<latchkey::Guard<'_>>>) {
    match got {
        Ok(None) => {}
        Err(err) => assert_eq!(err.kind(), ErrorKind::HandleLost, "{what}: {err}"),
        Ok(Some(guard)) => panic!(
            "{what}: granted with token {} in the deleted namespace, while a process that opened the directory \
             afresh holds the same lock: two holders of one mutex",
            guard.fencing_token()
        ),
    }
}

/// `try_lock` by name, in a scope opened before `rm -rf` of its directory.
#[test]
fn a_lock_by_name_after_the_namespace_was_deleted_is_granted_beside_a_fresh_holder() {
    let dirs = Dirs::new("latchkey-review-del-name");
    let old = Scope::open(&dirs.url()).unwrap();
    drop(old.lock_blocking("warm").unwrap());
    fs::remove_dir_all(dirs.ns()).unwrap();
    let _fresh = fresh_holder(&dirs, "other");
    no_second_holder("the old scope's try_lock(\"other\")", old.try_lock("other"));
}

/// `try_lock` on a mutex handle opened before `rm -rf` of its directory.
#[test]
fn a_handle_opened_before_the_namespace_was_deleted_grants_beside_a_fresh_holder() {
    let dirs = Dirs::new("latchkey-review-del-handle");
    let old = Scope::open(&dirs.url()).unwrap();
    let mutex = old.mutex("x").unwrap();
    drop(mutex.lock_blocking().unwrap());
    let probe = old.lock_blocking("probe").unwrap();
    fs::remove_dir_all(dirs.ns()).unwrap();
    // A handle's fast path does not look at the file: the process's watcher thread
    // notices the deletion (inotify) and marks the namespace lost. Until it has run (a
    // scheduling delay, documented), a grant in the old file is possible; so the fresh
    // holder comes after it ran, as one started by a person or a script would.
    let noticed = std::time::Instant::now();
    while !probe.is_lost() {
        assert!(noticed.elapsed() < super::PATIENCE, "the deletion was not noticed within {:?}", super::PATIENCE);
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let _fresh = fresh_holder(&dirs, "x");
    no_second_holder("try_lock() of a mutex opened before", mutex.try_lock());
}
