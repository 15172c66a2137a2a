//! Conformance: mutex.

use super::*;

pub(super) fn mutex_try_lock_fails_while_held_and_succeeds_after_release(new_scope: NewScope) -> Result<()> {
    let scope = new_scope();
    let mutex = scope.mutex("mutex")?;
    let guard = mutex.lock_blocking()?;
    assert!(mutex.try_lock()?.is_none());
    assert!(scope.try_lock("mutex")?.is_none());
    assert!(scope.mutex("mutex")?.try_lock()?.is_none(), "a second handle sees the same lock");
    drop(guard);
    let again = mutex.try_lock()?.expect("free after release");
    assert!(scope.try_lock("mutex")?.is_none());
    drop(again);
    assert!(scope.try_lock("mutex")?.is_some());
    Ok(())
}

pub(super) fn mutex_is_locked_follows_the_holder(new_scope: NewScope) -> Result<()> {
    let scope = new_scope();
    let mutex = scope.mutex("mutex")?;
    assert!(!mutex.is_locked()?);
    assert!(!scope.is_locked("mutex")?);
    let guard = scope.lock_blocking("mutex")?;
    assert!(mutex.is_locked()?);
    assert!(scope.is_locked("mutex")?);
    assert!(!scope.is_locked("another")?);
    drop(guard);
    assert!(!mutex.is_locked()?);
    assert!(!scope.is_locked("mutex")?);
    Ok(())
}

pub(super) fn guard_release_returns_ok_and_frees_the_lock(new_scope: NewScope) -> Result<()> {
    let scope = new_scope();
    let mutex = scope.mutex("mutex")?;
    mutex.lock_blocking()?.release()?;
    assert!(!mutex.is_locked()?);
    scope.lock_blocking("mutex")?.release()?;
    assert!(!mutex.is_locked()?);
    let semaphore = scope.semaphore("semaphore", 3)?;
    semaphore.acquire_blocking(3)?.release()?;
    assert_eq!(semaphore.available()?, 3);
    Ok(())
}

/// A release future dropped after its first poll (as when another branch of a `select!`
/// wins) still releases: the guard was given to it, so nobody else can.
pub(super) fn a_release_dropped_after_its_first_poll_still_releases(new_scope: NewScope) -> Result<()> {
    let scope = new_scope();
    let mutex = scope.mutex("mutex")?;
    for _ in 0..20 {
        let guard = mutex.lock_blocking()?;
        let mut release = Probe::new(guard.release_async());
        if release.poll().is_pending() {
            drop(release);
        }
        // `inspect` waits for the scope's background work, as every later request does.
        wait_until("the dropped release frees the lock", || !scope.is_locked("mutex").unwrap());
        mutex.try_lock()?.expect("free after the dropped release").release()?;
    }
    Ok(())
}

pub(super) fn guard_reports_name_scope_and_permits(new_scope: NewScope) -> Result<()> {
    let scope = new_scope();
    let check = |guard: &Guard<'_>, name: &str, permits: u32| {
        assert_eq!(guard.name().as_str(), name);
        assert_eq!(guard.scope(), scope.url());
        assert_eq!(guard.permits(), permits);
        guard.check().expect("a held guard is intact");
    };
    check(&scope.mutex("m")?.lock_blocking()?, "m", 1);
    check(&scope.lock_blocking("by/name")?, "by/name", 1);
    let rwlock = scope.rwlock("rw")?;
    check(&rwlock.read_blocking()?, "rw", 1);
    check(&rwlock.write_blocking()?, "rw", RWLOCK_CAPACITY);
    check(&scope.semaphore("sem", 5)?.acquire_blocking(3)?, "sem", 3);
    check(&*scope.interval_lock("turns", HOUR)?.lock_blocking()?, "turns", 1);
    Ok(())
}

pub(super) fn fencing_tokens_strictly_increase_across_every_way_to_lock_a_name(new_scope: NewScope) -> Result<()> {
    let scope = new_scope();
    let rt = runtime();
    let name = "tokens";
    let mutex = scope.mutex(name)?;
    let interval = scope.interval_lock(name, HOUR)?;
    // Each grant's guard is dropped when its closure returns, before the next grant.
    let grants: [&dyn Fn() -> Result<u64>; 8] = [
        &|| Ok(mutex.lock_blocking()?.fencing_token()),
        &|| Ok(mutex.try_lock()?.expect("free").fencing_token()),
        &|| Ok(scope.lock_blocking(name)?.fencing_token()),
        &|| Ok(scope.try_lock(name)?.expect("free").fencing_token()),
        &|| Ok(rt.block_on(mutex.lock())?.fencing_token()),
        &|| Ok(rt.block_on(scope.lock(name))?.fencing_token()),
        &|| Ok(interval.lock_blocking()?.fencing_token()),
        &|| scope.guard(name, || scope.inspect(name).map(|state| state.last_token))?,
    ];
    let mut tokens = grants.iter().map(|grant| grant()).collect::<Result<Vec<u64>>>()?;
    // A grant made through the queue, rather than on the fast path.
    let held = mutex.lock_blocking()?;
    tokens.push(held.fencing_token());
    let mut queued = Probe::new(scope.lock(name));
    queued.assert_pending();
    crate::support::queued(&scope, name, 1);
    drop(held);
    tokens.push(queued.ready()?.fencing_token());
    // A new handle on the same name goes on from there.
    drop((mutex, interval));
    tokens.push(scope.mutex(name)?.lock_blocking()?.fencing_token());
    assert_increasing(&tokens);
    if remembers_released_tokens(&scope) {
        assert_eq!(scope.inspect(name)?.last_token, *tokens.last().unwrap());
    }

    // Readers of a reader-writer lock and holders of a semaphore get distinct tokens too.
    let rwlock = scope.rwlock("rw")?;
    let (r1, r2) = (rwlock.read_blocking()?, rwlock.read_blocking()?);
    let (t1, t2) = (r1.fencing_token(), r2.fencing_token());
    drop((r1, r2));
    assert_increasing(&[t1, t2, rwlock.write_blocking()?.fencing_token()]);
    Ok(())
}

pub(super) fn fencing_tokens_keep_increasing_after_an_idle_name_is_reclaimed(new_scope: NewScope) -> Result<()> {
    let scope = new_scope();
    let name = "reclaimed";
    let first = scope.lock_blocking(name)?.fencing_token();
    // Use many other names, until the scope reclaims this one.
    let mut reclaimed = false;
    for i in 0..100_000 {
        if i % 64 == 0 && scope.inspect(name)?.capacity == 0 {
            reclaimed = true;
            break;
        }
        drop(scope.lock_blocking(&format!("filler/{i}"))?);
    }
    assert!(reclaimed, "the idle name was never reclaimed");
    let second = scope.lock_blocking(name)?.fencing_token();
    assert!(second > first, "the grant after reclamation got token {second}, not above the earlier {first}");
    Ok(())
}

pub(super) fn fencing_tokens_keep_increasing_when_a_name_is_reopened_with_another_capacity(
    new_scope: NewScope,
) -> Result<()> {
    let scope = new_scope();
    let name = "reopened";
    let as_mutex = scope.mutex(name)?.lock_blocking()?.fencing_token();
    // Nobody has the name open or held any more, so it may be opened as something else.
    let semaphore = scope.semaphore(name, 2)?;
    let as_semaphore = semaphore.acquire_blocking(1)?.fencing_token();
    assert!(
        as_semaphore > as_mutex,
        "the name's first grant as a semaphore got token {as_semaphore}, not above its last as a mutex {as_mutex}"
    );
    Ok(())
}
