"""What an adversarial review of the Python binding found, each a test that failed (or
hung) before its fix."""

import asyncio
import gc
import threading
import time

import pytest

import latchkey
from latchkey.synchronization import ReaderWriterLock, RWReadContext


def test_a_task_cancelled_just_after_its_grant_gives_the_grant_back(scope):
    mutex = scope.mutex("raced")

    async def main():
        held = await mutex.acquire_async()
        task = asyncio.ensure_future(mutex.acquire_async())
        while scope.inspect("raced")["waiters"] == 0:
            await asyncio.sleep(0.01)
        held.release()
        # Granted, and its answer queued on the loop, but the task not resumed yet.
        while not scope.is_locked("raced"):
            time.sleep(0.001)
        time.sleep(0.05)
        asyncio.get_running_loop().call_soon(task.cancel)
        with pytest.raises(asyncio.CancelledError):
            await task
        return task

    gc.disable()
    try:
        task = asyncio.run(main())
        assert not scope.is_locked("raced"), "a grant to a cancelled task stayed held"
        del task
    finally:
        gc.enable()


def test_release_skips_grants_released_through_their_guard(scope):
    mutex = scope.mutex("stale")
    first = mutex.acquire()
    first.release()
    mutex.acquire()
    mutex.release()
    assert not scope.is_locked("stale")
    # One grant held through the object, taken in another thread: release() finds it.
    taken = threading.Thread(target=mutex.acquire)
    taken.start()
    taken.join()
    mutex.release()
    assert not scope.is_locked("stale")


def test_infinite_and_huge_timeouts_wait_for_good(scope):
    mutex = scope.mutex("forever")
    for timeout in (float("inf"), 1e300):
        guard = mutex.acquire(timeout=timeout)
        guard.release()
    with pytest.raises(ValueError):
        mutex.acquire(timeout=float("nan"))


def test_readers_counts_every_reader_in_one_process():
    rw = ReaderWriterLock()
    with RWReadContext(rw):
        other = threading.Thread(target=rw.lock_read)
        other.start()
        other.join()
        assert rw.readers() == 2
        rw.unlock_read()  # the other thread's grant: the one held through the lock, not ours
    assert rw.readers() == 0


def test_an_interval_lock_taken_with_async_with_counts_its_interval_from_the_grant(scope):
    interval = scope.interval_lock("since", 60)

    async def main():
        async with interval:
            before = interval._held().fencing_token
            interval.poll()  # 60 s have not passed: kept, not ceded
            assert interval._held().fencing_token == before

    asyncio.run(main())
