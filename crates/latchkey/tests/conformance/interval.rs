//! Conformance: interval lock.

use super::*;

pub(super) fn interval_cede_with_nobody_waiting_keeps_the_grant(new_scope: NewScope) -> Result<()> {
    let scope = new_scope();
    let lock = scope.interval_lock("turns", HOUR)?;
    let guard = lock.lock_blocking()?;
    let (token, granted_at) = (guard.fencing_token(), guard.granted_at());
    let guard = guard.cede_blocking()?;
    assert_eq!((guard.fencing_token(), guard.granted_at()), (token, granted_at));
    let guard = Probe::new(guard.cede()).ready()?;
    assert_eq!(guard.fencing_token(), token);
    assert!(lock.is_locked()?);
    assert!(lock.try_lock()?.is_none());
    guard.release()?;
    assert!(!lock.is_locked()?);
    Ok(())
}

pub(super) fn interval_cede_hands_over_to_the_waiter_and_requeues_the_ceder(new_scope: NewScope) -> Result<()> {
    let scope = new_scope();
    let lock = scope.interval_lock("turns", HOUR)?;
    let guard = lock.lock_blocking()?;
    let first = guard.fencing_token();
    let mut waiter = Probe::new(lock.lock());
    waiter.assert_pending();
    queued(&scope, "turns", 1);

    let mut ceding = Probe::new(guard.cede());
    ceding.assert_pending();
    waiter.wait_for_wakes(1);
    assert_eq!(waiter.wakes(), 1, "the cede granted the waiter");
    let waiter_guard = waiter.ready()?;
    let second = waiter_guard.fencing_token();
    assert_eq!(waiters(&scope, "turns"), 1, "the ceder waits at the back");

    drop(waiter_guard);
    ceding.wait_for_wakes(1);
    assert_eq!(ceding.wakes(), 1);
    let guard = ceding.ready()?;
    assert_increasing(&[first, second, guard.fencing_token()]);
    assert_eq!(waiters(&scope, "turns"), 0);
    Ok(())
}

pub(super) fn interval_poll_before_the_interval_keeps_the_lock(new_scope: NewScope) -> Result<()> {
    let scope = new_scope();
    let lock = scope.interval_lock("turns", HOUR)?;
    assert_eq!(lock.interval(), HOUR);
    let guard = lock.lock_blocking()?;
    let token = guard.fencing_token();
    let mut waiter = Probe::new(lock.lock());
    waiter.assert_pending();
    queued(&scope, "turns", 1);
    assert!(!guard.is_due());
    let guard = guard.poll_blocking()?;
    let guard = Probe::new(guard.poll()).ready()?;
    assert_eq!(guard.fencing_token(), token);
    assert_eq!(waiter.wakes(), 0);
    waiter.assert_pending();
    drop(guard);
    drop(waiter.ready()?);
    Ok(())
}

pub(super) fn wait_until_due(guard: &IntervalGuard<'_>) {
    while !guard.is_due() {
        // Only lets the (1 ms) interval pass; the order of events does not depend on it.
        std::thread::sleep(Duration::from_millis(1));
    }
}

pub(super) fn interval_poll_after_the_interval_cedes_to_the_waiter(new_scope: NewScope) -> Result<()> {
    let scope = new_scope();
    let lock = scope.interval_lock("turns", Duration::from_millis(1))?;
    let guard = lock.lock_blocking()?;
    let first = guard.fencing_token();
    let mut waiter = Probe::new(lock.lock());
    waiter.assert_pending();
    queued(&scope, "turns", 1);
    wait_until_due(&guard);

    let mut polling = Probe::new(guard.poll());
    polling.assert_pending();
    waiter.wait_for_wakes(1);
    assert_eq!(waiter.wakes(), 1);
    let waiter_guard = waiter.ready()?;
    let second = waiter_guard.fencing_token();
    drop(waiter_guard);
    let guard = polling.ready()?;
    assert_increasing(&[first, second, guard.fencing_token()]);
    Ok(())
}

pub(super) fn interval_blocking_cede_and_poll_hand_over_to_a_waiting_thread(new_scope: NewScope) -> Result<()> {
    let scope = new_scope();
    let lock = scope.interval_lock("turns", Duration::from_millis(1))?;
    let lock_in_turn = |lock: &IntervalLock| lock.lock_blocking().map(|guard| guard.fencing_token());
    std::thread::scope(|s| -> Result<()> {
        let guard = lock.lock_blocking()?;
        let first = guard.fencing_token();
        let waiter = s.spawn(|| lock_in_turn(&lock));
        wait_until("the thread waits", || waiters(&scope, "turns") == 1);
        // Returns once the waiting thread has had its turn and released.
        let guard = guard.cede_blocking()?;
        let theirs = waiter.join().expect("the waiter thread")?;
        assert_increasing(&[first, theirs, guard.fencing_token()]);

        let before = guard.fencing_token();
        let waiter = s.spawn(|| lock_in_turn(&lock));
        wait_until("the thread waits", || waiters(&scope, "turns") == 1);
        wait_until_due(&guard);
        let guard = guard.poll_blocking()?;
        let theirs = waiter.join().expect("the waiter thread")?;
        assert_increasing(&[before, theirs, guard.fencing_token()]);
        Ok(())
    })
}
