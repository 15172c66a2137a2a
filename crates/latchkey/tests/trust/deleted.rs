//! Issue 8, item 2: a namespace deleted (`rm -rf` of its directory) or replaced (another
//! namespace file renamed over it) while a lock is held in it. The hold must be reported
//! lost, a namespace made again must never grant a fencing token at or below one granted
//! before, and a scope opened before must never grant a lock in the dead namespace that a
//! process opening the directory afresh could be granted too.

use std::fs;

use latchkey::{ErrorKind, Guard, Scope};

use super::{url, Dirs, Proc, FILE_NAME};

/// How the namespace is lost.
#[derive(Clone, Copy, Debug)]
enum Loss {
    /// `rm -rf` of the namespace directory.
    Deleted,
    /// A namespace file made in another directory is renamed over the namespace file.
    Replaced,
}

/// Opens the namespace of `dirs`, takes the mutex `m` three times and keeps the third
/// grant: the scope, the guard and its token.
fn holding_m(dirs: &Dirs) -> (Scope, Guard<'static>, u64) {
    let scope = Scope::open(&dirs.url()).expect("open a fresh namespace");
    drop(scope.lock_blocking("m").unwrap());
    drop(scope.lock_blocking("m").unwrap());
    let guard = scope.lock_blocking("m").unwrap();
    let token = guard.fencing_token();
    (scope, guard, token)
}

fn lose(dirs: &Dirs, loss: Loss) {
    match loss {
        Loss::Deleted => fs::remove_dir_all(dirs.ns()).expect("rm -rf the namespace directory"),
        Loss::Replaced => {
            let elsewhere = dirs.other("elsewhere");
            let other = Scope::open(&url(&elsewhere)).expect("open a second namespace");
            drop(other.lock_blocking("x").unwrap());
            drop(other);
            fs::rename(elsewhere.join(FILE_NAME), dirs.file()).expect("rename a namespace file over the first");
        }
    }
}

fn hold_is_lost(loss: Loss) {
    let dirs = Dirs::new("latchkey-trust-lost");
    let (_scope, guard, _) = holding_m(&dirs);
    lose(&dirs, loss);
    let err = match guard.check() {
        Ok(()) => {
            panic!("check() returned Ok after the namespace was {loss:?}: the hold is in a namespace that is gone")
        }
        Err(err) => err,
    };
    assert_eq!(err.kind(), ErrorKind::HandleLost, "check() after the namespace was {loss:?}: {err}");
    assert_eq!(err.code(), 8406, "{err}");
}

/// A worker opens the namespace directory afresh and takes `m`: its token must be above
/// every token granted before the loss.
fn another_process_gets_a_higher_token(loss: Loss) {
    let dirs = Dirs::new("latchkey-trust-other");
    let (_scope, _guard, before) = holding_m(&dirs);
    lose(&dirs, loss);
    let mut worker = Proc::spawn(&["take", &dirs.url(), "m"]);
    let line = worker.line("its grant of m");
    let token: u64 = match line.strip_prefix("token ") {
        Some(token) => token.parse().unwrap(),
        None => panic!("a process opening the namespace afresh after it was {loss:?} could not take m: {line}"),
    };
    assert!(
        token > before,
        "after the namespace was {loss:?}, a new process was granted m with fencing token {token}, \
         not above {before} granted before: a guarded resource would take the old holder for the newer"
    );
    worker.finish();
}

/// This process opens the namespace directory again and takes `m` (the old guard is still
/// alive, in the dead namespace): granted, with a token above every earlier one.
fn this_process_gets_a_higher_token(loss: Loss) {
    let dirs = Dirs::new("latchkey-trust-again");
    let (_scope, _guard, before) = holding_m(&dirs);
    lose(&dirs, loss);
    let again = Scope::open(&dirs.url()).expect("open the namespace again");
    let mutex = again.mutex("m").expect("open m again");
    let guard = match mutex.try_lock() {
        Ok(Some(guard)) => guard,
        Ok(None) => panic!(
            "after the namespace was {loss:?}, a scope opened again in this process finds m held: it still reads \
             the dead namespace (where the old guard holds m), not the one in the directory now"
        ),
        Err(err) => panic!("after the namespace was {loss:?}, a scope opened again cannot take m: {err}"),
    };
    assert!(
        guard.fencing_token() > before,
        "after the namespace was {loss:?}, m was granted again with token {}, not above {before} granted before",
        guard.fencing_token()
    );
}

/// The scope opened before the loss, asked for `other`: either it refuses (HandleLost),
/// or what it grants excludes a process that opens the directory afresh, both ways round.
fn the_old_scope_never_grants_beside_a_fresh_one(loss: Loss) {
    let dirs = Dirs::new("latchkey-trust-old");
    let (old, guard, _) = holding_m(&dirs);
    lose(&dirs, loss);

    // The old scope first, then a fresh process.
    let lost = |err: latchkey::Error| {
        assert_eq!(err.kind(), ErrorKind::HandleLost, "the old scope after the namespace was {loss:?}: {err}");
    };
    match old.mutex("other") {
        Err(err) => lost(err),
        Ok(mutex) => match mutex.try_lock() {
            Err(err) => lost(err),
            Ok(None) => panic!("nobody holds `other`, yet the old scope's try_lock found it held ({loss:?})"),
            Ok(Some(held)) => {
                let mut fresh = Proc::spawn(&["try", &dirs.url(), "other"]);
                let line = fresh.line("whether it could take `other`");
                assert_eq!(
                    line,
                    "busy",
                    "the old scope holds `other` (token {}; the namespace was {loss:?}), and a process that opened \
                     the directory afresh was not excluded",
                    held.fencing_token()
                );
                fresh.finish();
            }
        },
    }

    // A fresh process first, then the old scope.
    let mut fresh = Proc::spawn(&["hold", &dirs.url(), "other"]);
    let line = fresh.line("its hold of `other`");
    assert!(line.starts_with("held "), "a process that opened the directory afresh could not take `other`: {line}");
    match old.mutex("other").and_then(|mutex| mutex.try_lock().map(|g| g.map(|g| g.fencing_token()))) {
        Err(err) => lost(err),
        Ok(None) => {}
        Ok(Some(token)) => panic!(
            "a process that opened the directory afresh holds `other` ({line}), and the old scope (the namespace \
             was {loss:?}) was granted it too, with token {token}"
        ),
    }
    assert!(fresh.tell("go"));
    fresh.finish();
    drop(guard);
}

/// Issue 8, item 2a: after `rm -rf` of the namespace directory, `check()` of a guard
/// taken in it reports HandleLost (8406).
#[test]
fn deleting_the_namespace_directory_reports_the_hold_lost() {
    hold_is_lost(Loss::Deleted);
}

/// Issue 8, item 2b: after `rm -rf` of the namespace directory, a process that opens it
/// afresh may take the lock, with a fencing token above every earlier grant.
#[test]
fn a_deleted_namespace_made_again_by_another_process_grants_higher_tokens() {
    another_process_gets_a_higher_token(Loss::Deleted);
}

/// Issue 8, item 2b: after `rm -rf` of the namespace directory, the same process opening
/// it again may take the lock (it is not held in the namespace that is there now), with a
/// fencing token above every earlier grant.
#[test]
fn a_deleted_namespace_opened_again_in_the_same_process_grants_higher_tokens() {
    this_process_gets_a_higher_token(Loss::Deleted);
}

/// Issue 8, item 2c: after another namespace file is renamed over the namespace file,
/// `check()` of a guard taken in it reports HandleLost (8406).
#[test]
fn replacing_the_namespace_file_reports_the_hold_lost() {
    hold_is_lost(Loss::Replaced);
}

/// Issue 8, item 2c: after another namespace file is renamed over the namespace file, a
/// process that opens the directory afresh gets fencing tokens above every earlier grant.
#[test]
fn a_replaced_namespace_file_grants_higher_tokens_to_another_process() {
    another_process_gets_a_higher_token(Loss::Replaced);
}

/// Issue 8, item 2c: after another namespace file is renamed over the namespace file, the
/// same process opening the directory again may take the lock, with a higher token.
#[test]
fn a_replaced_namespace_file_opened_again_in_the_same_process_grants_higher_tokens() {
    this_process_gets_a_higher_token(Loss::Replaced);
}

/// Issue 8, item 2d: a scope opened before `rm -rf` of its directory either refuses with
/// HandleLost or uses the namespace there now: it and a process that opens the directory
/// afresh never hold the same lock at once.
#[test]
fn a_scope_used_after_its_namespace_was_deleted_never_grants_beside_a_fresh_one() {
    the_old_scope_never_grants_beside_a_fresh_one(Loss::Deleted);
}

/// Issue 8, item 2d: the same, after another namespace file is renamed over the file.
#[test]
fn a_scope_used_after_its_namespace_file_was_replaced_never_grants_beside_a_fresh_one() {
    the_old_scope_never_grants_beside_a_fresh_one(Loss::Replaced);
}
