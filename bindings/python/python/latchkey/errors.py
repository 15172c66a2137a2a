"""latchkey's errors: one exception class per error code, all under LatchkeyError."""

from typing import Optional


class LatchkeyError(Exception):
    """A latchkey error. ``code`` is its stable number (8400-8413); ``lock_name`` and
    ``scope`` say which lock and scope it concerns, when it concerns one."""

    code = 8400
    retryable = False

    def __init__(self, message: str, lock_name: Optional[str] = None, scope: Optional[str] = None):
        super().__init__(message)
        self.lock_name = lock_name
        self.scope = scope


class Generic(LatchkeyError):
    code = 8400


class AcquireFailed(LatchkeyError):
    code = 8401
    retryable = True


class ReleaseFailed(LatchkeyError):
    code = 8402


class Timeout(LatchkeyError, TimeoutError):
    """Not granted before the timeout (also a built-in ``TimeoutError``)."""

    code = 8403
    retryable = True


class NotHeld(LatchkeyError):
    code = 8404


class InvalidName(LatchkeyError, ValueError):
    code = 8405


class HandleLost(LatchkeyError):
    """The hold was lost (its session over a network ended)."""

    code = 8406
    retryable = True


class Unavailable(LatchkeyError):
    code = 8407
    retryable = True


class Unsupported(LatchkeyError):
    code = 8408


class PermissionDenied(LatchkeyError, PermissionError):
    code = 8409


class CapacityMismatch(LatchkeyError, ValueError):
    code = 8410


class Closed(LatchkeyError):
    code = 8411


class InvalidScope(LatchkeyError, ValueError):
    code = 8412


class Corrupted(LatchkeyError):
    code = 8413


_BY_CODE = {cls.code: cls for cls in LatchkeyError.__subclasses__()}


def from_native(code: int, message: str, lock_name: Optional[str], scope: Optional[str]) -> LatchkeyError:
    """The exception of ``code`` (what the native module raises)."""
    return _BY_CODE.get(code, Generic)(message, lock_name, scope)
