//! The host namespace's table of names: it holds 4,096 names at once, reclaims the idle
//! ones nobody has open when it is full, and never reclaims a name in use.

use latchkey::{ErrorKind, Result, Scope};

use crate::support::{fresh_dir, TempDir};

const NAMES: usize = 4096;

fn namespace() -> (TempDir, Scope) {
    let dir = TempDir(fresh_dir("latchkey-table-test"));
    let scope = Scope::open(&format!("host:{}", dir.display())).expect("open a fresh host namespace");
    (dir, scope)
}

#[test]
fn a_full_table_reclaims_names_nobody_has_open_and_never_one_in_use() -> Result<()> {
    let (_dir, scope) = namespace();
    let mut open: Vec<_> = (0..NAMES).map(|i| scope.mutex(&format!("open/{i}"))).collect::<Result<_>>()?;
    let held = scope.lock_blocking("open/1")?;
    let token = held.fencing_token();

    let err = scope.mutex("one-too-many").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.to_string().contains("4096 names") && err.to_string().contains("one-too-many"), "{err}");

    // Close two names: the next new name takes the place of one of them.
    drop(open.remove(2));
    drop(open.remove(0));
    let newcomer = scope.mutex("one-too-many")?;
    assert_eq!(scope.inspect("open/0")?.capacity, 0, "a closed, idle name was reclaimed");
    assert_eq!(scope.inspect("open/3")?.capacity, 1, "a name still open was kept");
    let state = scope.inspect("open/1")?;
    assert_eq!((state.in_use, state.last_token), (1, token), "a held name was kept, with its holder");
    drop(held);
    drop(newcomer.lock_blocking()?);
    Ok(())
}

#[test]
fn names_come_and_go_far_beyond_the_size_of_the_table() -> Result<()> {
    let (_dir, scope) = namespace();
    let kept = scope.mutex("kept")?;
    let guard = kept.lock_blocking()?;
    // More names than the table holds, each used again after it was reclaimed.
    let mut last = std::collections::HashMap::new();
    for i in 0..4 * NAMES {
        let name = format!("passing/{}", i % (NAMES + NAMES / 2));
        let token = scope.lock_blocking(&name)?.fencing_token();
        let before = last.insert(name.clone(), token).unwrap_or(0);
        assert!(token > before, "{name} got token {token} after {before}: a name's tokens never go back");
    }
    assert_eq!(scope.inspect("passing/0")?.capacity, 0, "the name was reclaimed at least once");
    assert_eq!(scope.inspect("kept")?.holders.len(), 1, "the held name survived every reclaim");
    drop(guard);
    Ok(())
}
