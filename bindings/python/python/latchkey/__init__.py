"""latchkey: named locks shared by threads, asyncio tasks, processes and machines.

    import latchkey

    scope = latchkey.Scope("host:")          # every process of this machine
    with scope.mutex("db-migrations") as guard:
        migrate(fencing_token=guard.fencing_token)

A lock taken here is the same lock for a Rust program, a Node.js service or a shell
script (``latchkey run``) on the same scope. Scopes: ``process:`` (this process),
``host:`` or ``host:/dir`` (this machine), ``etcd://…``, ``postgres://…``, ``redis://…``.
Errors are exceptions under :class:`LatchkeyError` with a ``code``.
"""

import asyncio
import contextvars
import os
import threading
import time
from typing import Callable, Dict, Optional, TypeVar

from . import _latchkey
from ._latchkey import RWLOCK_CAPACITY, Guard
from .errors import (
    AcquireFailed,
    CapacityMismatch,
    Closed,
    Corrupted,
    Generic,
    HandleLost,
    InvalidName,
    InvalidScope,
    LatchkeyError,
    NotHeld,
    PermissionDenied,
    ReleaseFailed,
    Timeout,
    Unavailable,
    Unsupported,
)

__all__ = [
    "Scope", "Mutex", "RwLock", "Semaphore", "IntervalLock", "Permits", "Guard", "RWLOCK_CAPACITY",
    "LatchkeyError", "Generic", "AcquireFailed", "ReleaseFailed", "Timeout", "NotHeld", "InvalidName",
    "HandleLost", "Unavailable", "Unsupported", "PermissionDenied", "CapacityMismatch", "Closed",
    "InvalidScope", "Corrupted", "lock",
]

T = TypeVar("T")


class Scope:
    """The namespace of the locks of ``url``.

    A scope belongs to the process that opened it. In a child forked without exec (the
    ``fork`` start method of :mod:`multiprocessing`), open the scope again: the parent's
    refuses there with :class:`HandleLost`, and guards the child inherited are the
    parent's (releasing them there fails and leaves the parent's hold).
    """

    def __init__(self, url: str = "host:"):
        self._scope = _latchkey.Scope(url)

    @property
    def url(self) -> str:
        return self._scope.url

    def mutex(self, name: str) -> "Mutex":
        """The mutex ``name``."""
        return Mutex(self._scope.open_lock(name, 1))

    def rwlock(self, name: str) -> "RwLock":
        """The writer-preferring reader-writer lock ``name``."""
        return RwLock(self._scope.open_lock(name, RWLOCK_CAPACITY))

    def semaphore(self, name: str, n: int) -> "Semaphore":
        """The FIFO semaphore ``name`` of ``n`` permits."""
        return Semaphore(self._scope.open_lock(name, n))

    def interval_lock(self, name: str, interval_seconds: float) -> "IntervalLock":
        """The interval lock ``name``: its holder cedes to waiters after ``interval_seconds``."""
        return IntervalLock(self._scope.open_lock(name, 1), interval_seconds)

    def is_locked(self, name: str) -> bool:
        """Whether anybody holds ``name``."""
        return self._scope.is_locked(name)

    def inspect(self, name: str) -> dict:
        """A snapshot of ``name``: capacity, in_use, holders, waiters, queue, last_token."""
        return self._scope.inspect(name)

    def guard(self, name: str, fn: Callable[[], T]) -> T:
        """Runs ``fn`` while holding the mutex ``name``; returns what it returns."""
        with self.mutex(name):
            return fn()

    def close(self) -> None:
        """Closes the scope (ends its session, for scopes over a network)."""
        self._scope.close()

    def __repr__(self) -> str:
        return f"latchkey.Scope({self.url!r})"


class Permits:
    """``permits`` of a native lock at each acquire: a context manager (sync and async)
    that also offers ``acquire``/``try_acquire``/``release`` as ``threading.Lock`` does.
    ``release()`` gives back the last grant taken in the same thread or asyncio task (or,
    if it took none, the oldest one held)."""

    def __init__(self, lock, permits: int):
        self._lock = lock
        self._permits = permits
        # Grants by who took them (a thread, or an asyncio task), and all of them by id
        # (those released through the guard itself are pruned now and then).
        self._mine = contextvars.ContextVar(f"latchkey-{id(self)}", default=())
        self._all: Dict[int, Guard] = {}
        self._all_lock = threading.Lock()

    @property
    def name(self) -> str:
        return self._lock.name

    def _took(self, guard: Guard) -> Guard:
        mine = self._mine.get()
        if mine and not mine[-1].held:
            mine = tuple(g for g in mine if g.held)
        self._mine.set(mine + (guard,))
        self._all[id(guard)] = guard
        if len(self._all) > 64:
            self._prune()
        return guard

    def _prune(self) -> None:
        with self._all_lock:
            for key, guard in list(self._all.items()):
                if not guard.held:
                    self._all.pop(key, None)

    def acquire(self, timeout: Optional[float] = None) -> Guard:
        """Blocks until granted, at most ``timeout`` seconds (then :class:`Timeout`).
        The GIL is released while waiting; Ctrl-C withdraws the request and raises
        ``KeyboardInterrupt``."""
        return self._took(self._lock.acquire(self._permits, timeout))

    def try_acquire(self) -> Optional[Guard]:
        """The grant if it is free and nobody waits, else ``None``."""
        guard = self._lock.try_acquire(self._permits)
        return None if guard is None else self._took(guard)

    async def acquire_async(self, timeout: Optional[float] = None) -> Guard:
        """Waits without blocking the event loop, at most ``timeout`` seconds; cancelling
        the task withdraws the request."""
        return self._took(await _wait(self._lock, self._permits, timeout))

    def release(self) -> None:
        """Gives back the last grant taken in this thread or task; if it took none, the one
        grant held through this object (:class:`NotHeld` if there is none, or several: then
        release the guard itself)."""
        mine = self._mine.get()
        while mine and not mine[-1].held:
            mine = mine[:-1]
        if mine:
            # The common case: the last grant this thread or task took.
            guard = mine[-1]
            self._mine.set(mine[:-1])
            self._all.pop(id(guard), None)
            guard.release()
            return
        self._prune()
        held = list(self._all.values())
        if not held:
            raise NotHeld(f"lock {self.name!r} is not held through this object", self.name)
        if len(held) > 1:
            raise NotHeld(
                f"lock {self.name!r} is held {len(held)} times, none by this thread or task: "
                "release the guard itself",
                self.name,
            )
        self._all.pop(id(held[0]), None)
        held[0].release()

    def locked(self) -> bool:
        """Whether anybody holds the name."""
        return self._lock.inspect()["in_use"] > 0

    def __enter__(self) -> Guard:
        return self.acquire()

    def __exit__(self, exc_type, exc, traceback) -> None:
        self.release()

    async def __aenter__(self) -> Guard:
        return await self.acquire_async()

    async def __aexit__(self, *exc) -> None:
        self.release()


async def _wait(lock, permits: int, timeout: Optional[float]) -> Guard:
    """The native lock's wait, as an awaitable that a task's cancellation withdraws."""
    loop = asyncio.get_running_loop()
    future = loop.create_future()

    def settle(guard, error):
        if future.cancelled():
            if guard is not None:
                guard.release()
        elif error is not None:
            future.set_exception(error)
        else:
            future.set_result(guard)

    def done(guard, error):  # on the native runtime's thread
        try:
            loop.call_soon_threadsafe(settle, guard, error)
        except RuntimeError:  # the loop is closed: nobody takes the grant
            if guard is not None:
                guard.release()

    pending = lock.start_acquire(permits, timeout, done)
    try:
        return await future
    except asyncio.CancelledError:
        # Withdraws the request; a grant that came first is given back, whether `settle`
        # has run (the future holds it) or not (it will find the future cancelled).
        pending.cancel()
        if future.done() and not future.cancelled() and future.exception() is None:
            future.result().release()
        future.cancel()
        raise


class Mutex(Permits):
    """A mutex: ``with scope.mutex("db") as guard: ...``."""

    def __init__(self, lock):
        super().__init__(lock, 1)


class RwLock:
    """A writer-preferring reader-writer lock: ``with lock.read(): ...``,
    ``with lock.write(): ...``; a waiting writer holds back later readers."""

    def __init__(self, lock):
        self._read = Permits(lock, 1)
        self._write = Permits(lock, RWLOCK_CAPACITY)

    def read(self) -> Permits:
        return self._read

    def write(self) -> Permits:
        return self._write

    def locked(self) -> bool:
        return self._read.locked()


class Semaphore(Permits):
    """A FIFO semaphore of n permits: ``acquire(k)`` takes k; nobody passes a waiter."""

    def __init__(self, lock):
        super().__init__(lock, 1)

    def acquire(self, k: int = 1, timeout: Optional[float] = None) -> Guard:  # type: ignore[override]
        return self._took(self._lock.acquire(k, timeout))

    def try_acquire(self, k: int = 1) -> Optional[Guard]:  # type: ignore[override]
        guard = self._lock.try_acquire(k)
        return None if guard is None else self._took(guard)

    async def acquire_async(self, k: int = 1, timeout: Optional[float] = None) -> Guard:  # type: ignore[override]
        return self._took(await _wait(self._lock, k, timeout))


class IntervalLock(Permits):
    """A lock whose holder cedes to waiters after an interval: ``lock()``, then ``poll()``
    now and then (it cedes once the interval has passed since the grant, if anybody
    waits), ``unlock()``; ``cede()`` hands over at once."""

    def __init__(self, lock, interval: float):
        super().__init__(lock, 1)
        self.interval = interval
        self._granted_at = 0.0

    def _took(self, guard: Guard) -> Guard:
        self._granted_at = time.monotonic()
        return super()._took(guard)

    def lock(self, timeout: Optional[float] = None) -> Guard:
        return self.acquire(timeout)

    def unlock(self) -> None:
        self.release()

    def _held(self) -> Guard:
        mine = self._mine.get()
        if not mine:
            raise NotHeld(f"interval lock {self.name!r} is not held here", self.name)
        return mine[-1]

    def cede(self) -> None:
        """If anybody waits, hands over and blocks until granted again (a new fencing token)."""
        self._held().cede()
        self._granted_at = time.monotonic()

    def poll(self) -> None:
        """Cedes (see :meth:`cede`) if the interval since the grant has passed."""
        if time.monotonic() - self._granted_at >= self.interval:
            self.cede()

    def __enter__(self) -> Guard:
        return self.lock()


_OPENED = {}
_OPENED_LOCK = threading.Lock()


def _forget_opened_in_child() -> None:
    """A child forked without exec opens its own scopes: the parent's refuse there."""
    global _OPENED, _OPENED_LOCK
    _OPENED, _OPENED_LOCK = {}, threading.Lock()


os.register_at_fork(after_in_child=_forget_opened_in_child)


async def lock(name: str, scope: str = "host:", timeout: Optional[float] = None) -> Guard:
    """The mutex ``name`` of ``scope``, in one line: ``guard = await latchkey.lock("job")``,
    then ``guard.release()``. The scope is opened once per URL and kept (a scope over a
    network is a session)."""
    with _OPENED_LOCK:
        opened = _OPENED.get(scope)
        if opened is None:
            opened = _OPENED[scope] = Scope(scope)
    return await _wait(opened._scope.open_lock(name, 1), 1, timeout)
