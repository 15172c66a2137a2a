"""Python benchmark of latchkey (`python bindings/python/bench.py`): an uncontended acquire
and release of a host-scope mutex against the cross-process locks Python users pick
(filelock, fasteners.InterProcessLock, portalocker) and threading.Lock for reference, in
the same run. Prints one JSON object per line, as `compare --json` does: case, ours_ns,
peer, peer_ns (and the ratio). Needs `pip install filelock fasteners portalocker`.

Each measurement is the median of 7 rounds of N cycles after a warm-up; ours and the peer
alternate round by round."""

import json
import os
import statistics
import sys
import tempfile
import threading
import time
from importlib.metadata import version

import latchkey

N = 20000
ROUNDS = 7


def per_cycle(cycle, n=N):
    start = time.perf_counter_ns()
    for _ in range(n):
        cycle()
    return (time.perf_counter_ns() - start) / n


def compare(case, ours, peer_name, peer, n=N):
    per_cycle(ours, n // 10)
    per_cycle(peer, n // 10)
    mine, theirs = [], []
    for _ in range(ROUNDS):
        mine.append(per_cycle(ours, n))
        theirs.append(per_cycle(peer, n))
    row = {"case": case, "ours_ns": statistics.median(mine), "peer": peer_name, "peer_ns": statistics.median(theirs)}
    row["ratio"] = round(row["ours_ns"] / row["peer_ns"], 3)
    print(json.dumps(row), flush=True)
    return row


def main():
    import fasteners
    import filelock
    import portalocker

    directory = tempfile.mkdtemp(prefix="latchkey-bench-")
    scope = latchkey.Scope(f"host:{directory}")
    mutex = scope.mutex("bench")

    def ours_with():
        with mutex:
            pass

    def ours_guard():
        mutex.acquire()
        mutex.release()

    rows = []
    file_lock = filelock.FileLock(os.path.join(directory, "filelock.lock"))

    def filelock_cycle():
        with file_lock:
            pass

    rows.append(compare("python/uncontended/mutex", ours_with, f"filelock {version('filelock')} FileLock", filelock_cycle))
    inter = fasteners.InterProcessLock(os.path.join(directory, "fasteners.lock"))

    def fasteners_cycle():
        inter.acquire()
        inter.release()

    rows.append(
        compare("python/uncontended/mutex", ours_guard, f"fasteners {version('fasteners')} InterProcessLock", fasteners_cycle)
    )
    portal = portalocker.Lock(os.path.join(directory, "portalocker.lock"), timeout=10)

    def portalocker_cycle():
        portal.acquire()
        portal.release()

    rows.append(compare("python/uncontended/mutex", ours_guard, f"portalocker {version('portalocker')} Lock", portalocker_cycle))
    plain = threading.Lock()

    def threading_cycle():
        with plain:
            pass

    compare("python/uncontended/mutex", ours_with, "threading.Lock (one process only)", threading_cycle)
    slowest = max(row["ratio"] for row in rows)
    print(
        f"note: python/uncontended/mutex: ours is {1 / slowest:.1f} times faster than the fastest file-lock peer "
        f"(target: at least 10)",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
