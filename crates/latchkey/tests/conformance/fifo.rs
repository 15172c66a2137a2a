//! Conformance: FIFO and cancel safety.

use super::*;

pub(super) fn mutex_grants_waiters_in_fifo_order(new_scope: NewScope) -> Result<()> {
    let scope = new_scope();
    let mutex = scope.mutex("fifo")?;
    let held = mutex.lock_blocking()?;
    let (mut a, mut b, mut c) = (Probe::new(mutex.lock()), Probe::new(mutex.lock()), Probe::new(mutex.lock()));
    a.assert_pending();
    queued(&scope, "fifo", 1);
    b.assert_pending();
    queued(&scope, "fifo", 2);
    c.assert_pending();
    queued(&scope, "fifo", 3);
    assert_eq!(waiters(&scope, "fifo"), 3);
    let mut tokens = vec![held.fencing_token()];

    drop(held);
    a.wait_for_wakes(1);
    assert_eq!((a.wakes(), b.wakes(), c.wakes()), (1, 0, 0), "only the head is woken");
    b.assert_pending();
    c.assert_pending();
    let guard_a = a.ready()?;
    tokens.push(guard_a.fencing_token());

    drop(guard_a);
    b.wait_for_wakes(1);
    assert_eq!((b.wakes(), c.wakes()), (1, 0));
    c.assert_pending();
    let guard_b = b.ready()?;
    tokens.push(guard_b.fencing_token());

    drop(guard_b);
    c.wait_for_wakes(1);
    assert_eq!(c.wakes(), 1);
    tokens.push(c.ready()?.fencing_token());
    assert_increasing(&tokens);
    assert_eq!(waiters(&scope, "fifo"), 0);
    assert!(!mutex.is_locked()?);
    Ok(())
}

pub(super) fn by_name_and_handle_waiters_share_one_fifo_queue(new_scope: NewScope) -> Result<()> {
    let scope = new_scope();
    let mutex = scope.mutex("fifo")?;
    let held = scope.lock_blocking("fifo")?;
    let (mut a, mut b, mut c) =
        (Probe::new(scope.lock("fifo")), Probe::new(mutex.lock()), Probe::new(scope.lock("fifo")));
    a.assert_pending();
    queued(&scope, "fifo", 1);
    b.assert_pending();
    queued(&scope, "fifo", 2);
    c.assert_pending();
    queued(&scope, "fifo", 3);
    // A try from either side does not barge past the queue.
    drop(held);
    assert!(scope.try_lock("fifo")?.is_none());
    assert!(mutex.try_lock()?.is_none());
    a.wait_for_wakes(1);
    assert_eq!((a.wakes(), b.wakes(), c.wakes()), (1, 0, 0));
    drop(a.ready()?);
    b.wait_for_wakes(1);
    assert_eq!((b.wakes(), c.wakes()), (1, 0));
    drop(b.ready()?);
    c.wait_for_wakes(1);
    assert_eq!(c.wakes(), 1);
    drop(c.ready()?);
    assert_eq!(waiters(&scope, "fifo"), 0);
    Ok(())
}

pub(super) fn dropping_the_pending_head_waiter_passes_the_lock_to_the_next(new_scope: NewScope) -> Result<()> {
    let scope = new_scope();
    let mutex = scope.mutex("cancel")?;
    let held = mutex.lock_blocking()?;
    let (mut a, mut b) = (Probe::new(mutex.lock()), Probe::new(mutex.lock()));
    a.assert_pending();
    queued(&scope, "cancel", 1);
    b.assert_pending();
    queued(&scope, "cancel", 2);
    drop(a);
    assert_eq!(waiters(&scope, "cancel"), 1, "a dropped waiter leaves the queue");
    drop(held);
    b.wait_for_wakes(1);
    assert_eq!(b.wakes(), 1);
    let guard = b.ready()?;
    assert_eq!(waiters(&scope, "cancel"), 0);
    drop(guard);
    assert!(!mutex.is_locked()?);
    assert!(mutex.try_lock()?.is_some());
    Ok(())
}

pub(super) fn dropping_a_granted_but_unpolled_future_passes_the_lock_to_the_next(new_scope: NewScope) -> Result<()> {
    let scope = new_scope();
    let mutex = scope.mutex("cancel")?;
    let held = mutex.lock_blocking()?;
    let (mut a, mut b) = (Probe::new(mutex.lock()), Probe::new(scope.lock("cancel")));
    a.assert_pending();
    queued(&scope, "cancel", 1);
    b.assert_pending();
    queued(&scope, "cancel", 2);
    drop(held);
    a.wait_for_wakes(1);
    assert_eq!((a.wakes(), b.wakes()), (1, 0), "the grant went to A");
    drop(a); // granted, but never polled again
    b.wait_for_wakes(1);
    assert_eq!(b.wakes(), 1, "A's grant is passed on to B");
    let guard = b.ready()?;
    assert_eq!(waiters(&scope, "cancel"), 0);
    assert!(mutex.try_lock()?.is_none(), "B alone holds the lock");
    drop(guard);
    assert!(!mutex.is_locked()?);
    Ok(())
}

pub(super) fn dropping_a_granted_but_unpolled_future_frees_the_lock(new_scope: NewScope) -> Result<()> {
    let scope = new_scope();
    let mutex = scope.mutex("cancel")?;
    let held = mutex.lock_blocking()?;
    let mut a = Probe::new(mutex.lock());
    a.assert_pending();
    queued(&scope, "cancel", 1);
    drop(held);
    a.wait_for_wakes(1);
    assert_eq!(a.wakes(), 1);
    drop(a);
    assert!(!mutex.is_locked()?, "the lock is not lost with the dropped grant");
    assert_eq!(waiters(&scope, "cancel"), 0);
    assert!(mutex.try_lock()?.is_some());
    assert!(scope.try_lock("cancel")?.is_some());
    Ok(())
}
