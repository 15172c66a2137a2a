"""asyncio: async with, acquire_async with a timeout, and a cancelled task withdraws its
request."""

import asyncio

import pytest

import latchkey


def test_async_with_and_timeouts(scope):
    mutex = scope.mutex("job")

    async def main():
        async with mutex as guard:
            assert guard.fencing_token > 0
            with pytest.raises(latchkey.Timeout):
                await mutex.acquire_async(timeout=0.05)
            assert scope.inspect("job")["waiters"] == 0, "a timed-out request stayed queued"
        guard = await latchkey.lock("job", scope=scope.url)
        assert scope.is_locked("job")
        guard.release()

    asyncio.run(main())


def test_a_cancelled_task_withdraws_its_request(scope):
    mutex = scope.mutex("job")

    async def main():
        held = await mutex.acquire_async()
        task = asyncio.ensure_future(mutex.acquire_async())
        while scope.inspect("job")["waiters"] == 0:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert scope.inspect("job")["waiters"] == 0, "the cancelled request stayed queued"
        mutex.release()
        assert not held.held
        # The next waiter is granted at once: nothing was left in the queue.
        async with mutex:
            pass

    asyncio.run(main())


def test_a_semaphore_of_two_lets_two_tasks_in_at_a_time(scope):
    sem = scope.semaphore("pool", 2)

    async def main():
        inside, most, done = 0, 0, []

        async def worker(i):
            nonlocal inside, most
            async with sem:
                inside += 1
                most = max(most, inside)
                await asyncio.sleep(0.01)
                inside -= 1
                done.append(i)

        first = await sem.acquire_async(2)
        tasks = [asyncio.ensure_future(worker(i)) for i in range(5)]
        while scope.inspect("pool")["waiters"] < 5:
            await asyncio.sleep(0.01)
        sem.release()
        await asyncio.gather(*tasks)
        assert sorted(done) == [0, 1, 2, 3, 4] and most == 2
        assert first.held is False

    asyncio.run(main())
