//! The conformance suite: what every scope must do, written once as functions of a scope
//! factory and run against every scope in `for_each_scope!` (see `support`).
//!
//! Order is checked by polling futures by hand, and blocking waits by threads that meet
//! at known states: no test depends on timing.

use std::future::Future;
use std::time::Duration;

use latchkey::{
    ErrorKind, Guard, IntervalGuard, IntervalLock, Mutex, Result, RwLock, Scope, Semaphore, RWLOCK_CAPACITY,
};

use crate::support::{expect_err, runtime, wait_until, waiters, NewScope, Probe};

/// Runs every conformance test against the scope `$factory` makes, in module `$scope`.
macro_rules! conformance_suite {
    ($scope:ident, $factory:path) => {
        mod $scope {
            scope_tests!($factory;
                mutex_try_lock_fails_while_held_and_succeeds_after_release,
                mutex_is_locked_follows_the_holder,
                guard_release_returns_ok_and_frees_the_lock,
                guard_reports_name_scope_and_permits,
                fencing_tokens_strictly_increase_across_every_way_to_lock_a_name,
                fencing_tokens_keep_increasing_after_an_idle_name_is_reclaimed,
                fencing_tokens_keep_increasing_when_a_name_is_reopened_with_another_capacity,
                mutex_grants_waiters_in_fifo_order,
                by_name_and_handle_waiters_share_one_fifo_queue,
                dropping_the_pending_head_waiter_passes_the_lock_to_the_next,
                dropping_a_granted_but_unpolled_future_passes_the_lock_to_the_next,
                dropping_a_granted_but_unpolled_future_frees_the_lock,
                rwlock_readers_share_and_exclude_writers,
                rwlock_queued_writer_holds_back_new_readers,
                rwlock_readers_queued_before_a_writer_are_not_starved,
                semaphore_grants_at_most_n_permits,
                semaphore_head_of_line_request_holds_back_smaller_later_ones,
                semaphore_rejects_requests_of_zero_or_more_than_n_permits,
                capacity_mismatch_while_the_name_is_open_with_another_capacity,
                interval_cede_with_nobody_waiting_keeps_the_grant,
                interval_cede_hands_over_to_the_waiter_and_requeues_the_ceder,
                interval_poll_before_the_interval_keeps_the_lock,
                interval_poll_after_the_interval_cedes_to_the_waiter,
                interval_blocking_cede_and_poll_hand_over_to_a_waiting_thread,
                blocking_timeouts_fail_with_timeout_and_leave_no_waiter,
                async_timeouts_fail_with_timeout_and_leave_no_waiter,
                zero_timeout_succeeds_on_a_free_lock_and_fails_on_a_held_one,
                scope_guard_runs_the_closure_under_the_lock,
                scope_guard_async_runs_the_future_under_the_lock,
                inspect_and_list_show_holders_and_waiters,
                blocked_thread_is_woken_by_an_async_release,
                async_waiter_is_woken_by_a_blocking_release,
                handles_guards_and_futures_are_send,
            );
        }
    };
}

for_each_scope!(conformance_suite);

const HOUR: Duration = Duration::from_secs(3600);
const SHORT: Duration = Duration::from_millis(20);

#[track_caller]
fn assert_increasing(tokens: &[u64]) {
    assert!(tokens.windows(2).all(|w| w[0] < w[1]), "fencing tokens must strictly increase: {tokens:?}");
}

// ---------------------------------------------------------------- mutex

fn mutex_try_lock_fails_while_held_and_succeeds_after_release(new_scope: NewScope) -> Result<()> {
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

fn mutex_is_locked_follows_the_holder(new_scope: NewScope) -> Result<()> {
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

fn guard_release_returns_ok_and_frees_the_lock(new_scope: NewScope) -> Result<()> {
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

fn guard_reports_name_scope_and_permits(new_scope: NewScope) -> Result<()> {
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

fn fencing_tokens_strictly_increase_across_every_way_to_lock_a_name(new_scope: NewScope) -> Result<()> {
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
    drop(held);
    tokens.push(queued.ready()?.fencing_token());
    // A new handle on the same name goes on from there.
    drop((mutex, interval));
    tokens.push(scope.mutex(name)?.lock_blocking()?.fencing_token());
    assert_increasing(&tokens);
    assert_eq!(scope.inspect(name)?.last_token, *tokens.last().unwrap());

    // Readers of a reader-writer lock and holders of a semaphore get distinct tokens too.
    let rwlock = scope.rwlock("rw")?;
    let (r1, r2) = (rwlock.read_blocking()?, rwlock.read_blocking()?);
    let (t1, t2) = (r1.fencing_token(), r2.fencing_token());
    drop((r1, r2));
    assert_increasing(&[t1, t2, rwlock.write_blocking()?.fencing_token()]);
    Ok(())
}

fn fencing_tokens_keep_increasing_after_an_idle_name_is_reclaimed(new_scope: NewScope) -> Result<()> {
    let scope = new_scope();
    let name = "reclaimed";
    let first = scope.lock_blocking(name)?.fencing_token();
    // Use many other names, so that a scope which reclaims idle names reclaims this one.
    for i in 0..100_000 {
        if i % 64 == 0 && scope.inspect(name)?.capacity == 0 {
            break;
        }
        drop(scope.lock_blocking(&format!("filler/{i}"))?);
    }
    let second = scope.lock_blocking(name)?.fencing_token();
    assert!(second > first, "the grant after reclamation got token {second}, not above the earlier {first}");
    Ok(())
}

fn fencing_tokens_keep_increasing_when_a_name_is_reopened_with_another_capacity(new_scope: NewScope) -> Result<()> {
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

// ---------------------------------------------------------------- FIFO and cancel safety

fn mutex_grants_waiters_in_fifo_order(new_scope: NewScope) -> Result<()> {
    let scope = new_scope();
    let mutex = scope.mutex("fifo")?;
    let held = mutex.lock_blocking()?;
    let (mut a, mut b, mut c) = (Probe::new(mutex.lock()), Probe::new(mutex.lock()), Probe::new(mutex.lock()));
    a.assert_pending();
    b.assert_pending();
    c.assert_pending();
    assert_eq!(waiters(&scope, "fifo"), 3);
    let mut tokens = vec![held.fencing_token()];

    drop(held);
    assert_eq!((a.wakes(), b.wakes(), c.wakes()), (1, 0, 0), "only the head is woken");
    b.assert_pending();
    c.assert_pending();
    let guard_a = a.ready()?;
    tokens.push(guard_a.fencing_token());

    drop(guard_a);
    assert_eq!((b.wakes(), c.wakes()), (1, 0));
    c.assert_pending();
    let guard_b = b.ready()?;
    tokens.push(guard_b.fencing_token());

    drop(guard_b);
    assert_eq!(c.wakes(), 1);
    tokens.push(c.ready()?.fencing_token());
    assert_increasing(&tokens);
    assert_eq!(waiters(&scope, "fifo"), 0);
    assert!(!mutex.is_locked()?);
    Ok(())
}

fn by_name_and_handle_waiters_share_one_fifo_queue(new_scope: NewScope) -> Result<()> {
    let scope = new_scope();
    let mutex = scope.mutex("fifo")?;
    let held = scope.lock_blocking("fifo")?;
    let (mut a, mut b, mut c) =
        (Probe::new(scope.lock("fifo")), Probe::new(mutex.lock()), Probe::new(scope.lock("fifo")));
    a.assert_pending();
    b.assert_pending();
    c.assert_pending();
    // A try from either side does not barge past the queue.
    drop(held);
    assert!(scope.try_lock("fifo")?.is_none());
    assert!(mutex.try_lock()?.is_none());
    assert_eq!((a.wakes(), b.wakes(), c.wakes()), (1, 0, 0));
    drop(a.ready()?);
    assert_eq!((b.wakes(), c.wakes()), (1, 0));
    drop(b.ready()?);
    assert_eq!(c.wakes(), 1);
    drop(c.ready()?);
    assert_eq!(waiters(&scope, "fifo"), 0);
    Ok(())
}

fn dropping_the_pending_head_waiter_passes_the_lock_to_the_next(new_scope: NewScope) -> Result<()> {
    let scope = new_scope();
    let mutex = scope.mutex("cancel")?;
    let held = mutex.lock_blocking()?;
    let (mut a, mut b) = (Probe::new(mutex.lock()), Probe::new(mutex.lock()));
    a.assert_pending();
    b.assert_pending();
    drop(a);
    assert_eq!(waiters(&scope, "cancel"), 1, "a dropped waiter leaves the queue");
    drop(held);
    assert_eq!(b.wakes(), 1);
    let guard = b.ready()?;
    assert_eq!(waiters(&scope, "cancel"), 0);
    drop(guard);
    assert!(!mutex.is_locked()?);
    assert!(mutex.try_lock()?.is_some());
    Ok(())
}

fn dropping_a_granted_but_unpolled_future_passes_the_lock_to_the_next(new_scope: NewScope) -> Result<()> {
    let scope = new_scope();
    let mutex = scope.mutex("cancel")?;
    let held = mutex.lock_blocking()?;
    let (mut a, mut b) = (Probe::new(mutex.lock()), Probe::new(scope.lock("cancel")));
    a.assert_pending();
    b.assert_pending();
    drop(held);
    assert_eq!((a.wakes(), b.wakes()), (1, 0), "the grant went to A");
    drop(a); // granted, but never polled again
    assert_eq!(b.wakes(), 1, "A's grant is passed on to B");
    let guard = b.ready()?;
    assert_eq!(waiters(&scope, "cancel"), 0);
    assert!(mutex.try_lock()?.is_none(), "B alone holds the lock");
    drop(guard);
    assert!(!mutex.is_locked()?);
    Ok(())
}

fn dropping_a_granted_but_unpolled_future_frees_the_lock(new_scope: NewScope) -> Result<()> {
    let scope = new_scope();
    let mutex = scope.mutex("cancel")?;
    let held = mutex.lock_blocking()?;
    let mut a = Probe::new(mutex.lock());
    a.assert_pending();
    drop(held);
    assert_eq!(a.wakes(), 1);
    drop(a);
    assert!(!mutex.is_locked()?, "the lock is not lost with the dropped grant");
    assert_eq!(waiters(&scope, "cancel"), 0);
    assert!(mutex.try_lock()?.is_some());
    assert!(scope.try_lock("cancel")?.is_some());
    Ok(())
}

// ---------------------------------------------------------------- reader-writer lock

fn rwlock_readers_share_and_exclude_writers(new_scope: NewScope) -> Result<()> {
    let scope = new_scope();
    let rwlock = scope.rwlock("rw")?;
    let a = rwlock.read_blocking()?;
    let b = rwlock.try_read()?.expect("readers share");
    assert_eq!(rwlock.readers()?, 2);
    assert!(!rwlock.is_write_locked()?);
    assert!(rwlock.try_write()?.is_none());
    drop((a, b));
    assert_eq!(rwlock.readers()?, 0);
    let writer = rwlock.try_write()?.expect("free");
    assert!(rwlock.is_write_locked()?);
    assert_eq!(rwlock.readers()?, 0);
    assert!(rwlock.try_read()?.is_none());
    assert!(rwlock.try_write()?.is_none());
    drop(writer);
    assert!(!rwlock.is_write_locked()?);
    Ok(())
}

fn rwlock_queued_writer_holds_back_new_readers(new_scope: NewScope) -> Result<()> {
    let scope = new_scope();
    let rwlock = scope.rwlock("rw")?;
    let reader = rwlock.read_blocking()?;
    let mut writer = Probe::new(rwlock.write());
    writer.assert_pending();
    assert_eq!(rwlock.writers_waiting()?, 1);
    assert!(rwlock.try_read()?.is_none(), "a new reader does not pass a waiting writer");
    let mut late_reader = Probe::new(rwlock.read());
    late_reader.assert_pending();
    assert_eq!(rwlock.readers()?, 1);

    drop(reader);
    assert_eq!((writer.wakes(), late_reader.wakes()), (1, 0));
    late_reader.assert_pending();
    let write_guard = writer.ready()?;
    assert!(rwlock.is_write_locked()?);
    assert_eq!(rwlock.writers_waiting()?, 0);

    drop(write_guard);
    assert_eq!(late_reader.wakes(), 1);
    let _read_guard = late_reader.ready()?;
    assert_eq!(rwlock.readers()?, 1);
    assert_eq!(waiters(&scope, "rw"), 0);
    Ok(())
}

fn rwlock_readers_queued_before_a_writer_are_not_starved(new_scope: NewScope) -> Result<()> {
    let scope = new_scope();
    let rwlock = scope.rwlock("rw")?;
    let first_writer = rwlock.write_blocking()?;
    let (mut r1, mut r2) = (Probe::new(rwlock.read()), Probe::new(rwlock.read()));
    let mut w2 = Probe::new(rwlock.write());
    let mut r3 = Probe::new(rwlock.read());
    // Queued in this order: r1, r2, w2, r3.
    r1.assert_pending();
    r2.assert_pending();
    w2.assert_pending();
    r3.assert_pending();
    assert_eq!(rwlock.writers_waiting()?, 1);
    assert_eq!(waiters(&scope, "rw"), 4);

    drop(first_writer);
    // Both readers ahead of the writer get in together; the writer and the reader behind it wait.
    assert_eq!((r1.wakes(), r2.wakes(), w2.wakes(), r3.wakes()), (1, 1, 0, 0));
    let (g1, g2) = (r1.ready()?, r2.ready()?);
    w2.assert_pending();
    r3.assert_pending();
    assert_eq!(rwlock.readers()?, 2);
    assert_eq!(rwlock.writers_waiting()?, 1);

    drop(g1);
    assert_eq!(w2.wakes(), 0, "one reader still holds");
    drop(g2);
    assert_eq!((w2.wakes(), r3.wakes()), (1, 0));
    r3.assert_pending();
    let writer = w2.ready()?;
    assert!(rwlock.is_write_locked()?);

    drop(writer);
    assert_eq!(r3.wakes(), 1);
    drop(r3.ready()?);
    assert_eq!(waiters(&scope, "rw"), 0);
    Ok(())
}

// ---------------------------------------------------------------- semaphore

fn semaphore_grants_at_most_n_permits(new_scope: NewScope) -> Result<()> {
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

fn semaphore_head_of_line_request_holds_back_smaller_later_ones(new_scope: NewScope) -> Result<()> {
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
    assert_eq!((big.wakes(), small.wakes()), (1, 0));
    small.assert_pending();
    let all = big.ready()?;
    assert_eq!(all.permits(), 3);

    drop(all);
    assert_eq!(small.wakes(), 1);
    drop(small.ready()?);
    assert_eq!(waiters(&scope, "sem"), 0);
    Ok(())
}

fn semaphore_rejects_requests_of_zero_or_more_than_n_permits(new_scope: NewScope) -> Result<()> {
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

fn capacity_mismatch_while_the_name_is_open_with_another_capacity(new_scope: NewScope) -> Result<()> {
    let scope = new_scope();
    let three = scope.semaphore("sem", 3)?;
    let err = expect_err(scope.semaphore("sem", 4), ErrorKind::CapacityMismatch);
    assert_eq!(err.code(), 8410);
    assert_eq!(err.name(), Some("sem"));
    assert_eq!(scope.semaphore("sem", 3)?.capacity(), 3, "the same capacity opens fine");

    let mutex = scope.mutex("shared")?;
    expect_err(scope.rwlock("shared"), ErrorKind::CapacityMismatch);
    expect_err(scope.semaphore("shared", 2), ErrorKind::CapacityMismatch);
    assert!(scope.interval_lock("shared", HOUR).is_ok(), "an interval lock is a mutex");
    drop(mutex);

    let rwlock = scope.rwlock("rw")?;
    expect_err(scope.mutex("rw"), ErrorKind::CapacityMismatch);
    expect_err(scope.lock_blocking("rw"), ErrorKind::CapacityMismatch);
    expect_err(scope.try_lock("rw"), ErrorKind::CapacityMismatch);

    // Once nobody has the name open, it may be opened with another capacity.
    drop((three, rwlock));
    assert_eq!(scope.semaphore("sem", 4)?.capacity(), 4);
    assert!(scope.try_lock("rw")?.is_some());
    Ok(())
}

// ---------------------------------------------------------------- interval lock

fn interval_cede_with_nobody_waiting_keeps_the_grant(new_scope: NewScope) -> Result<()> {
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

fn interval_cede_hands_over_to_the_waiter_and_requeues_the_ceder(new_scope: NewScope) -> Result<()> {
    let scope = new_scope();
    let lock = scope.interval_lock("turns", HOUR)?;
    let guard = lock.lock_blocking()?;
    let first = guard.fencing_token();
    let mut waiter = Probe::new(lock.lock());
    waiter.assert_pending();

    let mut ceding = Probe::new(guard.cede());
    ceding.assert_pending();
    assert_eq!(waiter.wakes(), 1, "the cede granted the waiter");
    let waiter_guard = waiter.ready()?;
    let second = waiter_guard.fencing_token();
    assert_eq!(waiters(&scope, "turns"), 1, "the ceder waits at the back");

    drop(waiter_guard);
    assert_eq!(ceding.wakes(), 1);
    let guard = ceding.ready()?;
    assert_increasing(&[first, second, guard.fencing_token()]);
    assert_eq!(waiters(&scope, "turns"), 0);
    Ok(())
}

fn interval_poll_before_the_interval_keeps_the_lock(new_scope: NewScope) -> Result<()> {
    let scope = new_scope();
    let lock = scope.interval_lock("turns", HOUR)?;
    assert_eq!(lock.interval(), HOUR);
    let guard = lock.lock_blocking()?;
    let token = guard.fencing_token();
    let mut waiter = Probe::new(lock.lock());
    waiter.assert_pending();
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

fn wait_until_due(guard: &IntervalGuard<'_>) {
    while !guard.is_due() {
        // Only lets the (1 ms) interval pass; the order of events does not depend on it.
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn interval_poll_after_the_interval_cedes_to_the_waiter(new_scope: NewScope) -> Result<()> {
    let scope = new_scope();
    let lock = scope.interval_lock("turns", Duration::from_millis(1))?;
    let guard = lock.lock_blocking()?;
    let first = guard.fencing_token();
    let mut waiter = Probe::new(lock.lock());
    waiter.assert_pending();
    wait_until_due(&guard);

    let mut polling = Probe::new(guard.poll());
    polling.assert_pending();
    assert_eq!(waiter.wakes(), 1);
    let waiter_guard = waiter.ready()?;
    let second = waiter_guard.fencing_token();
    drop(waiter_guard);
    let guard = polling.ready()?;
    assert_increasing(&[first, second, guard.fencing_token()]);
    Ok(())
}

fn interval_blocking_cede_and_poll_hand_over_to_a_waiting_thread(new_scope: NewScope) -> Result<()> {
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

// ---------------------------------------------------------------- timeouts

#[track_caller]
fn assert_timeout<T>(result: Result<T>, name: &str) {
    let err = expect_err(result, ErrorKind::Timeout);
    assert_eq!(err.code(), 8403);
    assert!(err.is_retryable());
    assert_eq!(err.name(), Some(name));
}

fn blocking_timeouts_fail_with_timeout_and_leave_no_waiter(new_scope: NewScope) -> Result<()> {
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

fn async_timeouts_fail_with_timeout_and_leave_no_waiter(new_scope: NewScope) -> Result<()> {
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

fn zero_timeout_succeeds_on_a_free_lock_and_fails_on_a_held_one(new_scope: NewScope) -> Result<()> {
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

// ---------------------------------------------------------------- guard, inspect, list

fn scope_guard_runs_the_closure_under_the_lock(new_scope: NewScope) -> Result<()> {
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

fn scope_guard_async_runs_the_future_under_the_lock(new_scope: NewScope) -> Result<()> {
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

fn inspect_and_list_show_holders_and_waiters(new_scope: NewScope) -> Result<()> {
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

// ---------------------------------------------------------------- blocking and async together

fn blocked_thread_is_woken_by_an_async_release(new_scope: NewScope) -> Result<()> {
    let scope = new_scope();
    let rt = runtime();
    let mutex = scope.mutex("mixed")?;
    let guard = rt.block_on(mutex.lock())?;
    let first = guard.fencing_token();
    std::thread::scope(|s| -> Result<()> {
        let blocked = s.spawn(|| scope.lock_blocking("mixed").map(|guard| guard.fencing_token()));
        wait_until("the thread waits", || waiters(&scope, "mixed") == 1);
        rt.block_on(async move {
            tokio::task::yield_now().await;
            guard.release()
        })?;
        let theirs = blocked.join().expect("the blocked thread")?;
        assert!(theirs > first);
        Ok(())
    })?;
    assert!(!mutex.is_locked()?);
    Ok(())
}

fn async_waiter_is_woken_by_a_blocking_release(new_scope: NewScope) -> Result<()> {
    let scope = new_scope();
    let rt = runtime();
    let mutex = scope.mutex("mixed")?;
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    std::thread::scope(|s| -> Result<()> {
        let mutex = &mutex;
        let holder = s.spawn(move || -> Result<()> {
            let guard = mutex.lock_blocking()?;
            held_tx.send(guard.fencing_token()).unwrap();
            release_rx.recv().unwrap();
            guard.release()
        });
        let theirs = held_rx.recv().unwrap();
        let ours = rt.block_on(async {
            let mut lock = std::pin::pin!(scope.lock("mixed"));
            let first_poll =
                std::future::poll_fn(|cx| std::task::Poll::Ready(lock.as_mut().poll(cx).is_pending())).await;
            assert!(first_poll, "the lock is held by the thread");
            release_tx.send(()).unwrap();
            lock.await
        })?;
        holder.join().expect("the holder thread")?;
        assert!(ours.fencing_token() > theirs);
        Ok(())
    })
}

// ---------------------------------------------------------------- auto traits

fn handles_guards_and_futures_are_send(new_scope: NewScope) -> Result<()> {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>(_: &T) {}
    send_sync::<Scope>();
    send_sync::<Mutex>();
    send_sync::<RwLock>();
    send_sync::<Semaphore>();
    send_sync::<IntervalLock>();
    send_sync::<Guard<'static>>();
    send_sync::<IntervalGuard<'static>>();
    send_sync::<latchkey::Error>();

    let scope = new_scope();
    let (mutex, rwlock) = (scope.mutex("m")?, scope.rwlock("rw")?);
    let (semaphore, interval) = (scope.semaphore("sem", 2)?, scope.interval_lock("i", HOUR)?);
    send(&mutex.lock());
    send(&mutex.lock_timeout(SHORT));
    send(&rwlock.read());
    send(&rwlock.write());
    send(&rwlock.write_timeout(SHORT));
    send(&semaphore.acquire(1));
    send(&semaphore.acquire_timeout(1, SHORT));
    send(&interval.lock());
    send(&scope.lock("by/name"));
    send(&scope.lock_timeout("by/name", SHORT));
    send(&scope.guard_async("by/name", || async { 1 }));
    let guard = interval.try_lock()?.expect("free");
    send(&guard.cede());
    assert!(!interval.is_locked()?, "dropping the unpolled cede future gave the lock up");
    Ok(())
}
