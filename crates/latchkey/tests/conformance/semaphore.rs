//! Conformance: semaphore.

use super::*;

pub(super) fn semaphore_grants_at_most_n_permits(new_scope: NewScope) -> Result<()> {
    let scope = new_scope();
    let semaphore = scope.semaphore("sem", 4)?;
    assert_eq!(semaphore.capacity(), 4);
    assert_eq!(semaphore.available()?, 4);
    let two = semaphore.acquire_blocking(2)?;
    let one = semaphore.try_acquire(1)?.expect("3 of 4 fit");
    assert_eq!(semaphore.available()?, 1);
    assert!(semaphore.try_acquire(2)?.is_none());
    let last = semaphore.try_acquire(1)?.expect("the last permit");
    assert_eq!(semaphore.available()?, 0);
    assert!(semaphore.try_acquire(1)?.is_none());
    assert_eq!(scope.inspect("sem")?.in_use, 4);
    drop(two);
    assert_eq!(semaphore.available()?, 2);
    drop((one, last));
    assert_eq!(semaphore.available()?, 4);
    let all = semaphore.try_acquire(4)?.expect("all permits are free");
    assert_eq!(all.permits(), 4);
    Ok(())
}

pub(super) fn semaphore_head_of_line_request_holds_back_smaller_later_ones(new_scope: NewScope) -> Result<()> {
    let scope = new_scope();
    let semaphore = scope.semaphore("sem", 3)?;
    let held = semaphore.acquire_blocking(1)?;
    let mut big = Probe::new(semaphore.acquire(3));
    big.assert_pending();
    assert_eq!(semaphore.available()?, 2);
    assert!(semaphore.try_acquire(1)?.is_none(), "2 permits are free, but the request for 3 came first");
    let mut small = Probe::new(semaphore.acquire(1));
    small.assert_pending();

    drop(held);
    big.wait_for_wakes(1);
    assert_eq!((big.wakes(), small.wakes()), (1, 0));
    small.assert_pending();
    let all = big.ready()?;
    assert_eq!(all.permits(), 3);

    drop(all);
    small.wait_for_wakes(1);
    assert_eq!(small.wakes(), 1);
    drop(small.ready()?);
    assert_eq!(waiters(&scope, "sem"), 0);
    Ok(())
}

pub(super) fn semaphore_rejects_requests_of_zero_or_more_than_n_permits(new_scope: NewScope) -> Result<()> {
    let scope = new_scope();
    let rt = runtime();
    let semaphore = scope.semaphore("sem", 3)?;
    for permits in [0, 4, u32::MAX] {
        for result in [
            semaphore.try_acquire(permits).map(drop),
            semaphore.acquire_blocking(permits).map(drop),
            semaphore.acquire_blocking_timeout(permits, SHORT).map(drop),
            rt.block_on(semaphore.acquire(permits)).map(drop),
        ] {
            let err = expect_err(result, ErrorKind::CapacityMismatch);
            assert_eq!(err.name(), Some("sem"));
            assert!(!err.is_retryable());
        }
    }
    assert_eq!(semaphore.available()?, 3, "a rejected request takes nothing");
    assert_eq!(waiters(&scope, "sem"), 0);
    Ok(())
}

pub(super) fn capacity_mismatch_while_the_name_is_open_with_another_capacity(new_scope: NewScope) -> Result<()> {
    let scope = new_scope();
    // A scope over a network checks a capacity against the requests on the server: there,
    // the names are held while the other capacities are tried.
    let on_open = capacity_checked_on_open(&scope);
    let three = scope.semaphore("sem", 3)?;
    let held_three = if on_open { None } else { Some(three.acquire_blocking(1)?) };
    let four = scope.semaphore("sem", 4).and_then(|four| four.try_acquire(1).map(drop));
    let err = expect_err(four, ErrorKind::CapacityMismatch);
    assert_eq!(err.code(), 8410);
    assert_eq!(err.name(), Some("sem"));
    assert_eq!(scope.semaphore("sem", 3)?.capacity(), 3, "the same capacity opens fine");

    let mutex = scope.mutex("shared")?;
    let held_mutex = if on_open { None } else { Some(mutex.lock_blocking()?) };
    expect_err(scope.rwlock("shared").and_then(|rw| rw.try_read().map(drop)), ErrorKind::CapacityMismatch);
    expect_err(scope.semaphore("shared", 2).and_then(|s| s.try_acquire(1).map(drop)), ErrorKind::CapacityMismatch);
    assert!(scope.interval_lock("shared", HOUR).is_ok(), "an interval lock is a mutex");
    drop(held_mutex);
    drop(mutex);

    let rwlock = scope.rwlock("rw")?;
    let held_rw = if on_open { None } else { Some(rwlock.read_blocking()?) };
    expect_err(scope.mutex("rw").and_then(|m| m.try_lock().map(drop)), ErrorKind::CapacityMismatch);
    expect_err(scope.lock_blocking("rw"), ErrorKind::CapacityMismatch);
    expect_err(scope.try_lock("rw"), ErrorKind::CapacityMismatch);
    drop((held_three, held_rw));

    // Once nobody has the name open, it may be opened with another capacity.
    drop((three, rwlock));
    assert_eq!(scope.semaphore("sem", 4)?.capacity(), 4);
    assert!(scope.try_lock("rw")?.is_some());
    Ok(())
}
