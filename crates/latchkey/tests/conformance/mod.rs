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

use crate::support::{
    capacity_checked_on_open, expect_err, queued, remembers_released_tokens, runtime, wait_until, waiters, NewScope,
    Probe,
};

mod bounds;
mod fifo;
mod inspect;
mod interval;
mod mixed;
mod mutex;
mod owned;
mod rwlock;
mod semaphore;
mod timeouts;

use bounds::*;
use fifo::*;
use inspect::*;
use interval::*;
use mixed::*;
use mutex::*;
use owned::*;
use rwlock::*;
use semaphore::*;
use timeouts::*;

/// Runs every conformance test against the scope `$factory` makes, in module `$scope`.
macro_rules! conformance_suite {
    ($scope:ident, $factory:path) => {
        mod $scope {
            scope_tests!($factory;
                mutex_try_lock_fails_while_held_and_succeeds_after_release,
                mutex_is_locked_follows_the_holder,
                guard_release_returns_ok_and_frees_the_lock,
                a_release_dropped_after_its_first_poll_still_releases,
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
                owned_guards_outlive_their_lock_and_keep_the_model,
                a_cede_not_granted_again_in_time_gives_the_lock_up,
                a_scope_in_a_forked_child_refuses_and_leaves_the_parents_hold,
                a_scope_dropped_in_a_forked_child_lets_it_exit,
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
