//! Conformance: guard, inspect, list.

use super::*;

pub(super) fn scope_guard_runs_the_closure_under_the_lock(new_scope: NewScope) -> Result<()> {
    let scope = new_scope();
    let answer = scope.guard("job", || {
        assert!(scope.is_locked("job").unwrap());
        assert!(scope.try_lock("job").unwrap().is_none());
        42
    })?;
    assert_eq!(answer, 42);
    assert!(!scope.is_locked("job")?);
    Ok(())
}

pub(super) fn scope_guard_async_runs_the_future_under_the_lock(new_scope: NewScope) -> Result<()> {
    let scope = new_scope();
    let rt = runtime();
    let answer = rt.block_on(scope.guard_async("job", || async {
        tokio::task::yield_now().await;
        assert!(scope.is_locked("job").unwrap());
        assert!(scope.try_lock("job").unwrap().is_none());
        "done"
    }))?;
    assert_eq!(answer, "done");
    assert!(!scope.is_locked("job")?);
    Ok(())
}

pub(super) fn inspect_and_list_show_holders_and_waiters(new_scope: NewScope) -> Result<()> {
    let scope = new_scope();
    let pid = std::process::id();
    assert!(scope.list()?.is_empty());
    let idle = scope.inspect("idle")?;
    assert_eq!((idle.name.as_str(), idle.in_use, idle.waiters), ("idle", 0, 0));
    assert!(idle.holders.is_empty());
    assert!(!idle.is_locked());

    let mutex = scope.mutex("a/mutex")?;
    let held = mutex.lock_blocking()?;
    let mut waiter = Probe::new(mutex.lock());
    waiter.assert_pending();
    queued(&scope, "a/mutex", 1);
    let semaphore = scope.semaphore("b/sem", 3)?;
    let two = semaphore.acquire_blocking(2)?;

    let state = scope.inspect("a/mutex")?;
    assert_eq!(state.name.as_str(), "a/mutex");
    assert_eq!((state.capacity, state.in_use, state.waiters, state.waiting_exclusive), (1, 1, 1, 1));
    assert_eq!(state.last_token, held.fencing_token());
    assert!(state.holders.iter().all(|holder| holder.pid == pid), "{:?}", state.holders);
    assert_eq!(state.holders.iter().map(|holder| holder.permits).sum::<u32>(), 1);

    let state = scope.inspect("b/sem")?;
    assert_eq!((state.capacity, state.in_use, state.waiters), (3, 2, 0));
    assert!(state.holders.iter().all(|holder| holder.pid == pid), "{:?}", state.holders);
    assert_eq!(state.holders.iter().map(|holder| holder.permits).sum::<u32>(), 2);

    let mut listed: Vec<_> = scope.list()?.into_iter().map(|state| (state.name.to_string(), state.in_use)).collect();
    listed.sort();
    assert_eq!(listed, [("a/mutex".to_string(), 1), ("b/sem".to_string(), 2)]);

    drop(held);
    drop(waiter.ready()?);
    drop(two);
    assert!(scope.list()?.is_empty(), "{:?}", scope.list()?);
    Ok(())
}
