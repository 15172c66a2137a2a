//! Conformance: timeouts.

use super::*;

#[track_caller]
pub(super) fn assert_timeout<T>(result: Result<T>, name: &str) {
    let err = expect_err(result, ErrorKind::Timeout);
    assert_eq!(err.code(), 8403);
    assert!(err.is_retryable());
    assert_eq!(err.name(), Some(name));
}

pub(super) fn blocking_timeouts_fail_with_timeout_and_leave_no_waiter(new_scope: NewScope) -> Result<()> {
    let scope = new_scope();
    let mutex = scope.mutex("m")?;
    let held = mutex.lock_blocking()?;
    assert_timeout(mutex.lock_blocking_timeout(SHORT), "m");
    assert_timeout(scope.lock_blocking_timeout("m", SHORT), "m");
    assert_timeout(scope.interval_lock("m", HOUR)?.lock_blocking_timeout(SHORT), "m");
    assert_eq!(waiters(&scope, "m"), 0);
    drop(held);
    assert!(mutex.try_lock()?.is_some(), "no abandoned waiter blocks the lock");

    let rwlock = scope.rwlock("rw")?;
    let reader = rwlock.read_blocking()?;
    assert_timeout(rwlock.write_blocking_timeout(SHORT), "rw");
    let writer = {
        drop(reader);
        rwlock.write_blocking()?
    };
    assert_timeout(rwlock.read_blocking_timeout(SHORT), "rw");
    drop(writer);

    let semaphore = scope.semaphore("sem", 2)?;
    let one = semaphore.acquire_blocking(1)?;
    assert_timeout(semaphore.acquire_blocking_timeout(2, SHORT), "sem");
    drop(one);
    assert_eq!((waiters(&scope, "rw"), waiters(&scope, "sem")), (0, 0));
    assert_eq!(semaphore.available()?, 2);
    Ok(())
}

pub(super) fn async_timeouts_fail_with_timeout_and_leave_no_waiter(new_scope: NewScope) -> Result<()> {
    let scope = new_scope();
    let rt = runtime();
    let mutex = scope.mutex("m")?;
    let held = mutex.lock_blocking()?;
    assert_timeout(rt.block_on(mutex.lock_timeout(SHORT)), "m");
    assert_timeout(rt.block_on(scope.lock_timeout("m", SHORT)), "m");
    assert_timeout(rt.block_on(scope.interval_lock("m", HOUR)?.lock_timeout(SHORT)), "m");
    assert_eq!(waiters(&scope, "m"), 0);
    drop(held);
    assert!(mutex.try_lock()?.is_some());

    let rwlock = scope.rwlock("rw")?;
    let reader = rwlock.read_blocking()?;
    assert_timeout(rt.block_on(rwlock.write_timeout(SHORT)), "rw");
    let writer = {
        drop(reader);
        rwlock.write_blocking()?
    };
    assert_timeout(rt.block_on(rwlock.read_timeout(SHORT)), "rw");
    drop(writer);

    let semaphore = scope.semaphore("sem", 2)?;
    let one = semaphore.acquire_blocking(1)?;
    assert_timeout(rt.block_on(semaphore.acquire_timeout(2, SHORT)), "sem");
    drop(one);
    assert_eq!((waiters(&scope, "rw"), waiters(&scope, "sem")), (0, 0));
    Ok(())
}

pub(super) fn zero_timeout_succeeds_on_a_free_lock_and_fails_on_a_held_one(new_scope: NewScope) -> Result<()> {
    let scope = new_scope();
    let rt = runtime();
    let mutex = scope.mutex("m")?;
    drop(mutex.lock_blocking_timeout(Duration::ZERO)?);
    drop(scope.lock_blocking_timeout("m", Duration::ZERO)?);
    drop(rt.block_on(mutex.lock_timeout(Duration::ZERO))?);
    drop(rt.block_on(scope.lock_timeout("m", Duration::ZERO))?);

    let held = mutex.lock_blocking()?;
    assert_timeout(mutex.lock_blocking_timeout(Duration::ZERO), "m");
    assert_timeout(scope.lock_blocking_timeout("m", Duration::ZERO), "m");
    assert_timeout(rt.block_on(mutex.lock_timeout(Duration::ZERO)), "m");
    assert_timeout(rt.block_on(scope.lock_timeout("m", Duration::ZERO)), "m");
    assert_eq!(waiters(&scope, "m"), 0);
    drop(held);
    assert!(!mutex.is_locked()?);
    Ok(())
}
