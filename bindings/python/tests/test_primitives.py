"""Every primitive from Python: context managers, acquire/try_acquire/release, timeouts,
inspect, guard, and the error classes with their codes."""

import threading
import time

import pytest

import latchkey
from latchkey import errors


def test_mutex_context_manager_and_fencing_tokens(scope):
    mutex = scope.mutex("db")
    with mutex as guard:
        first = guard.fencing_token
        assert scope.is_locked("db")
        assert mutex.try_acquire() is None
        with pytest.raises(latchkey.Timeout) as raised:
            mutex.acquire(timeout=0.05)
        assert raised.value.code == 8403 and isinstance(raised.value, TimeoutError)
        assert "db" in str(raised.value)
    assert not scope.is_locked("db")
    guard = mutex.acquire()
    assert guard.fencing_token > first
    mutex.release()
    assert not guard.held
    with pytest.raises(latchkey.NotHeld):
        mutex.release()
    with pytest.raises(latchkey.NotHeld):
        guard.release()


def test_a_waiting_thread_is_granted_on_release(scope):
    mutex = scope.mutex("hand-off")
    held = mutex.acquire()
    first = held.fencing_token
    got = []
    waiter = threading.Thread(target=lambda: got.append(mutex.acquire(timeout=30)))
    waiter.start()
    while scope.inspect("hand-off")["waiters"] == 0:
        time.sleep(0.01)
    held.release()
    waiter.join()
    assert got[0].fencing_token > first
    got[0].release()


def test_rwlock_readers_share_and_a_waiting_writer_holds_back_readers(scope):
    rw = scope.rwlock("report")
    with rw.read():
        assert rw.read().try_acquire() is not None
        rw.read().release()
        assert rw.write().try_acquire() is None
        writer = threading.Thread(target=lambda: rw.write().acquire(timeout=30))
        writer.start()
        while scope.inspect("report")["waiting_exclusive"] == 0:
            time.sleep(0.01)
        assert rw.read().try_acquire() is None, "a reader passed a waiting writer"
    writer.join()
    assert scope.inspect("report")["in_use"] == latchkey.RWLOCK_CAPACITY
    rw.write().release()
    assert not rw.locked()


def test_semaphore_grants_k_of_n(scope):
    sem = scope.semaphore("gpu", 3)
    two = sem.acquire(2)
    one = sem.try_acquire(1)
    assert one is not None and two.permits == 2
    assert sem.try_acquire(1) is None
    assert scope.inspect("gpu")["in_use"] == 3
    with pytest.raises(latchkey.CapacityMismatch) as raised:
        scope.semaphore("gpu", 4)
    assert raised.value.code == 8410
    sem.release()
    sem.release()
    with sem:
        assert scope.inspect("gpu")["in_use"] == 1


def test_interval_lock_lock_poll_cede_unlock(scope):
    interval = scope.interval_lock("slice", 0.02)
    tokens, locked = {}, threading.Event()

    def holder():
        interval.lock()
        tokens["first"] = interval._held().fencing_token
        interval.poll()  # nobody waits yet: kept
        locked.set()
        while scope.inspect("slice")["waiters"] == 0:
            time.sleep(0.01)
        time.sleep(0.03)  # past the interval
        interval.poll()  # hands over, then waits at the back until the waiter is done
        tokens["again"] = interval._held().fencing_token
        interval.unlock()

    thread = threading.Thread(target=holder)
    thread.start()
    locked.wait()
    assert interval.locked()
    waiter = scope.interval_lock("slice", 0.02)
    granted = waiter.lock(timeout=30).fencing_token
    assert granted > tokens["first"]
    waiter.unlock()
    thread.join()
    assert tokens["again"] > granted
    assert not interval.locked()


def test_inspect_and_guard(scope):
    with scope.mutex("seen"):
        state = scope.inspect("seen")
        assert state["capacity"] == 1 and state["in_use"] == 1
        assert state["holders"][0]["permits"] == 1
    assert scope.guard("seen", lambda: 42) == 42
    assert not scope.is_locked("seen")


def test_errors_carry_codes_and_the_lock(scope):
    with pytest.raises(latchkey.InvalidName) as raised:
        scope.mutex("")
    assert raised.value.code == 8405 and isinstance(raised.value, ValueError)
    with pytest.raises(latchkey.InvalidScope) as raised:
        latchkey.Scope("nosuch://x")
    assert raised.value.code == 8412
    codes = {cls.code: cls for cls in latchkey.LatchkeyError.__subclasses__()}
    assert sorted(codes) == list(range(8400, 8414)), "one class per code"
    for code, cls in codes.items():
        made = errors.from_native(code, "message", "name", "scope")
        assert type(made) is cls and made.lock_name == "name" and made.scope == "scope"
        assert isinstance(made, latchkey.LatchkeyError)


def test_a_guard_outlives_its_lock_object(scope):
    guard = scope.mutex("kept").acquire()
    assert scope.mutex("kept").try_acquire() is None
    guard.release()
    assert scope.mutex("kept").try_acquire() is not None
