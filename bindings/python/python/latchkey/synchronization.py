"""The synchronization utilities of free-threaded Python, with the same method names, on
latchkey: anonymous and in one process by default (a fresh name of the ``process:`` scope),
shared by name across processes and machines when given ``name=`` and ``scope=``.

    lock = IntervalLock(interval=0.005)                      # in this process
    lock = IntervalLock(name="ingest", scope="host:")        # every process of the machine
    rw = ReaderWriterLock(name="report", scope="redis://cache:6379/0")
    with RWReadContext(rw): ...
"""

import uuid
from typing import Optional, Union

from . import Scope, _latchkey

_PROCESS = None


def _scope_of(scope: Union[None, str, Scope]) -> Scope:
    global _PROCESS
    if isinstance(scope, Scope):
        return scope
    if scope is not None:
        return Scope(scope)
    if _PROCESS is None:
        _PROCESS = Scope("process:")
    return _PROCESS


def _name_of(name: Optional[str], kind: str) -> str:
    return name if name is not None else f"anonymous-{kind}-{uuid.uuid4().hex}"


class IntervalLock:
    """A lock whose holder cedes to waiters once ``interval`` seconds have passed since its
    grant: ``lock()``, ``poll()`` in the holder's loop, ``unlock()``; ``cede()`` hands over
    at once; ``locked()``."""

    def __init__(self, interval: float = 0.005, *, name: Optional[str] = None, scope=None):
        self._lock = _scope_of(scope).interval_lock(_name_of(name, "interval"), interval)

    @property
    def interval(self) -> float:
        return self._lock.interval

    def lock(self) -> None:
        self._lock.lock()

    def unlock(self) -> None:
        self._lock.unlock()

    def poll(self) -> None:
        self._lock.poll()

    def cede(self) -> None:
        self._lock.cede()

    def locked(self) -> bool:
        return self._lock.locked()

    def __enter__(self) -> "IntervalLock":
        self.lock()
        return self

    def __exit__(self, *exc) -> None:
        self.unlock()


class ReaderWriterLock:
    """A writer-preferring reader-writer lock: ``lock_read``/``unlock_read``,
    ``lock_write``/``unlock_write``; ``readers()``, ``writers_waiting()``,
    ``writer_locked()``."""

    def __init__(self, *, name: Optional[str] = None, scope=None):
        self._scope = _scope_of(scope)
        self._name = _name_of(name, "rwlock")
        self._rw = self._scope.rwlock(self._name)

    def lock_read(self) -> None:
        self._rw.read().acquire()

    def unlock_read(self) -> None:
        self._rw.read().release()

    def lock_write(self) -> None:
        self._rw.write().acquire()

    def unlock_write(self) -> None:
        self._rw.write().release()

    def readers(self) -> int:
        """How many readers hold the lock now."""
        # A reader takes one permit; a writer all of them.
        in_use = self._scope.inspect(self._name)["in_use"]
        return 0 if in_use == _latchkey.RWLOCK_CAPACITY else in_use

    def writers_waiting(self) -> int:
        """How many writers wait."""
        return self._scope.inspect(self._name)["waiting_exclusive"]

    def writer_locked(self) -> bool:
        """Whether a writer holds the lock."""
        return self._scope.inspect(self._name)["in_use"] == _latchkey.RWLOCK_CAPACITY


class RWReadContext:
    """``with RWReadContext(lock):`` holds ``lock`` for reading."""

    def __init__(self, lock: ReaderWriterLock):
        self._lock = lock

    def __enter__(self) -> ReaderWriterLock:
        self._lock.lock_read()
        return self._lock

    def __exit__(self, *exc) -> None:
        self._lock.unlock_read()


class RWWriteContext:
    """``with RWWriteContext(lock):`` holds ``lock`` for writing."""

    def __init__(self, lock: ReaderWriterLock):
        self._lock = lock

    def __enter__(self) -> ReaderWriterLock:
        self._lock.lock_write()
        return self._lock

    def __exit__(self, *exc) -> None:
        self._lock.unlock_write()
