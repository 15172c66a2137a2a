//! The host namespace's table of names: it grows as names come, reclaims the idle ones
//! nobody has open once it has doubled, never reclaims a name in use, and keeps every
//! name's fencing tokens increasing across reclaims.

use latchkey::{Result, Scope};

use crate::support::{fresh_dir, TempDir};

fn namespace() -> (TempDir, Scope) {
    let dir = TempDir(fresh_dir("latchkey-table-test"));
    let scope = Scope::open(&format!("host:{}", dir.display())).expect("open a fresh host namespace");
    (dir, scope)
}

fn file_len(dir: &TempDir) -> u64 {
    std::fs::metadata(dir.join(latchkey_host::FILE_NAME)).expect("the namespace file").len()
}

#[test]
fn names_are_reclaimed_when_unused_and_never_while_open_or_held() -> Result<()> {
    let (dir, scope) = namespace();
    let open = scope.mutex("open")?;
    let held = scope.lock_blocking("held")?;
    let token = held.fencing_token();
    // Many names used once: the table reclaims them instead of growing for ever.
    for i in 0..20_000 {
        drop(scope.lock_blocking(&format!("passing/{i}"))?);
    }
    let after_churn = file_len(&dir);
    for i in 20_000..60_000 {
        drop(scope.lock_blocking(&format!("passing/{i}"))?);
    }
    assert_eq!(file_len(&dir), after_churn, "churning names reuses records: the file does not grow");
    assert_eq!(scope.inspect("passing/0")?.capacity, 0, "an unused name was reclaimed");
    assert_eq!(scope.inspect("open")?.capacity, 1, "a name still open was kept");
    let state = scope.inspect("held")?;
    assert_eq!((state.in_use, state.last_token), (1, token), "a held name was kept, with its holder");
    drop(held);
    drop(open.lock_blocking()?);
    Ok(())
}

#[test]
fn a_name_reclaimed_and_made_again_keeps_its_tokens_increasing() -> Result<()> {
    let (_dir, scope) = namespace();
    let kept = scope.mutex("kept")?;
    let guard = kept.lock_blocking()?;
    let mut last = std::collections::HashMap::new();
    for i in 0..30_000 {
        let name = format!("passing/{}", i % 3_000);
        let token = scope.lock_blocking(&name)?.fencing_token();
        let before = last.insert(name.clone(), token).unwrap_or(0);
        assert!(token > before, "{name} got token {token} after {before}: a name's tokens never go back");
        // Churn other names so that these are reclaimed between uses.
        drop(scope.lock_blocking(&format!("churn/{i}"))?);
    }
    assert_eq!(scope.inspect("kept")?.holders.len(), 1, "the held name survived every reclaim");
    drop(guard);
    Ok(())
}
