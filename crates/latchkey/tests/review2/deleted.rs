//! **A namespace deleted under a process whose watcher has no inotify keeps granting.**
//! The first review's fix for "a lock by name, or a handle opened before, is granted in a
//! deleted namespace" is the watcher thread's inotify watch on the file and directory
//! (`wait::watch`): nothing else checks the file's identity on the uncontended paths
//! (`open_once` and `try_acquire` never do; `open` only for the first handle of a name).
//! But `sys::process::watch_paths` gives up silently when `inotify_init1` fails: with
//! more than `fs.inotify.max_user_instances` (128 by default) namespaces open by one user
//! across the machine (one instance per process), or at the descriptor limit. Such a
//! process never learns that the file was deleted: a lock by name, or `try_lock` on a
//! handle opened before, is granted in the dead file while a process that opened the
//! directory afresh holds the same name: two holders.
//!
//! The worker here makes `inotify_init1` fail as the per-user limit does, with a seccomp
//! filter (the limit itself is shared with every other test running meanwhile).

use std::fs;

use latchkey::Scope;

use super::worker::{kind, read_line, say};
use super::{Dirs, Proc};

/// The jobs of this module's workers.
pub fn job(job: &str, url: &str, fields: &[&str]) {
    match job {
        "no-inotify-then-lock" => no_inotify_then_lock(url, fields[0]),
        other => panic!("unknown worker job {other:?}"),
    }
}

/// Opens the scope where `inotify_init1` fails, opens a mutex `name`, says `ready`; on a line,
/// takes `name` by name and through the handle, and reports both.
fn no_inotify_then_lock(url: &str, name: &str) {
    let scope = open_without_inotify(url);
    let mutex = scope.mutex(name).unwrap();
    drop(mutex.lock_blocking().unwrap());
    say("ready");
    let _ = read_line();
    let report = |got: latchkey::Result<Option<latchkey::Guard<'_>>>| match got {
        Ok(Some(guard)) => format!("granted {}", guard.fencing_token()),
        Ok(None) => "busy".to_string(),
        Err(err) => format!("error {}", kind(&err)),
    };
    let by_name = scope.try_lock(name);
    let by_name = report(by_name);
    let by_handle = report(mutex.try_lock());
    say(format!("by name: {by_name}; by handle: {by_handle}"));
    while read_line().is_some() {}
}

/// Opens the scope where `inotify_init1` fails with `EMFILE`, as it does once the user
/// has `fs.inotify.max_user_instances` instances (a seccomp filter makes it fail here).
fn open_without_inotify(url: &str) -> Scope {
    super::seccomp::refuse(libc::SYS_inotify_init1, libc::EMFILE);
    Scope::open(url).unwrap()
}

#[test]
fn a_namespace_deleted_under_a_process_without_inotify_grants_beside_a_fresh_holder() {
    let dirs = Dirs::new("latchkey-review2-noinotify");
    let mut old = Proc::spawn(&["no-inotify-then-lock", &dirs.url(), "x"]);
    assert_eq!(old.line("that it opened the scope without inotify"), "ready");
    fs::remove_dir_all(dirs.ns()).unwrap();
    let mut fresh = Proc::spawn(&["hold", &dirs.url(), "x"]);
    let held = fresh.line("its hold");
    assert!(held.starts_with("held "), "a process that opened the directory afresh could not take x: {held}");
    assert!(old.tell("go"));
    let said = old.line("its try_locks");
    assert!(
        !said.contains("granted"),
        "a process whose namespace was deleted (rm -rf) while its watcher had no inotify granted x in the dead \
         namespace, while a process that opened the directory afresh holds x: {said}"
    );
}

/// **A hold of a lost namespace is given back with `Ok`.** `HostLock::release`
/// (handle.rs) reports `HandleLost` once the namespace is lost (deleted, replaced, cut
/// short), as `check()` does, but only on its slow path: the fast path
/// (`Rec::release_fast`, protocol/fast.rs) never looks at `is_lost()`, so a holder
/// without waiters in the dead file is told its release went well, after `check()` told
/// it the hold was lost.
#[test]
fn a_release_in_a_lost_namespace_reports_ok() {
    let dirs = Dirs::new("latchkey-review2-lostrelease");
    let scope = Scope::open(&dirs.url()).unwrap();
    let mutex = scope.mutex("x").unwrap();
    let guard = mutex.lock_blocking().unwrap();
    fs::remove_dir_all(dirs.ns()).unwrap();
    let checked = guard.check().expect_err("check() after rm -rf of the namespace");
    assert_eq!(checked.kind(), latchkey::ErrorKind::HandleLost, "{checked}");
    match guard.release() {
        Err(err) => assert_eq!(err.kind(), latchkey::ErrorKind::HandleLost, "{err}"),
        Ok(()) => panic!(
            "check() reported the hold lost (the namespace was deleted), and then release() returned Ok: the fast \
             path of release ignores a lost namespace"
        ),
    }
}
