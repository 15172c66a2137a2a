"""Across processes and languages on one host namespace: Ctrl-C withdraws a blocking wait;
a Python holder excludes the `latchkey` command (conflict code) and keeps a waiting
command waiting until the Python process is SIGKILLed; the synchronization module."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import latchkey
from latchkey.synchronization import IntervalLock, ReaderWriterLock, RWReadContext, RWWriteContext


def python(code, *args):
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


HOLD = """
    import sys, time, latchkey
    scope = latchkey.Scope(sys.argv[1])
    guard = scope.mutex(sys.argv[2]).acquire()
    print("held", guard.fencing_token, flush=True)
    time.sleep(600)
"""


def test_ctrl_c_interrupts_a_blocking_wait_and_leaves_nothing_queued(scope, url):
    held = scope.mutex("busy").acquire()
    waiter = python(
        """
        import sys, latchkey
        scope = latchkey.Scope(sys.argv[1])
        print("waiting", flush=True)
        try:
            scope.mutex("busy").acquire()
        except KeyboardInterrupt:
            # Counted before this process exits (its death would withdraw it anyway).
            print("interrupted", scope.inspect("busy")["waiters"], flush=True)
        """,
        url,
    )
    assert waiter.stdout.readline().strip() == "waiting"
    while scope.inspect("busy")["waiters"] == 0:
        time.sleep(0.01)
    waiter.send_signal(signal.SIGINT)
    out, err = waiter.communicate(timeout=30)
    assert out.strip() == "interrupted 0", f"the interrupted request stayed queued: {out} {err}"
    held.release()


def test_a_python_holder_excludes_the_command_until_it_is_killed(scope, url, cli):
    holder = python(HOLD, url, "shared")
    line = holder.stdout.readline().split()
    assert line[0] == "held", holder.stderr.read()
    # `latchkey run -n` fails with the conflict code (75) while Python holds the lock.
    busy = subprocess.run([cli, "run", "--scope", url, "-n", "shared", "--", "true"], capture_output=True)
    assert busy.returncode == 75, busy.stderr
    # A waiting command is granted when the Python process dies.
    waiter = subprocess.Popen([cli, "run", "--scope", url, "-w", "60", "shared", "--", "true"])
    while scope.inspect("shared")["waiters"] == 0:
        time.sleep(0.01)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert waiter.wait(timeout=60) == 0
    assert scope.inspect("shared")["last_token"] > int(line[1])


def test_synchronization_names_in_one_process_and_across(url):
    lock = IntervalLock(interval=0.001)
    with lock:
        assert lock.locked()
        lock.poll()
        lock.cede()
    assert not lock.locked()
    rw = ReaderWriterLock()
    with RWReadContext(rw):
        assert rw.readers() == 1 and not rw.writer_locked()
    with RWWriteContext(rw):
        assert rw.writer_locked() and rw.readers() == 0
    assert rw.writers_waiting() == 0
    # Named: the same lock for another process.
    shared = ReaderWriterLock(name="shared-rw", scope=url)
    shared.lock_write()
    other = python(
        """
        import sys, latchkey
        print(latchkey.Scope(sys.argv[1]).rwlock("shared-rw").read().try_acquire() is None)
        """,
        url,
    )
    out, err = other.communicate(timeout=60)
    assert out.strip() == "True", err
    shared.unlock_write()


def test_ctrl_c_interrupts_a_cede_and_gives_the_lock_up(url):
    child = python(
        """
        import sys, threading, time, latchkey
        scope = latchkey.Scope(sys.argv[1])
        mine = scope.interval_lock("slice", 0.0)
        guard = mine.lock()
        theirs = latchkey.Scope(sys.argv[1]).interval_lock("slice", 0.0)
        threading.Thread(target=theirs.lock, daemon=True).start()  # takes it and keeps it
        while scope.inspect("slice")["waiters"] == 0:
            time.sleep(0.01)
        print("ceding", flush=True)
        try:
            mine.cede()
        except KeyboardInterrupt:
            state = scope.inspect("slice")
            print("interrupted", state["waiters"], guard.held, flush=True)
        """,
        url,
    )
    assert child.stdout.readline().strip() == "ceding"
    time.sleep(0.3)
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=30)
    assert out.strip() == "interrupted 0 False", f"{out} {err}"


def _wait_in_a_forked_child(url, answers):
    """In a child forked after its parent waited: a fresh scope times out and then waits
    for the parent's release; the parent's scope refuses; the one-line lock() works."""
    import asyncio

    mine = latchkey.Scope(url)
    try:
        mine.mutex("busy").acquire(timeout=0.1)
        answers.put("granted while held")
    except latchkey.Timeout:
        answers.put("timed out")
    answers.put(("inherited", _use_the_parents_scope(url)))
    guard = mine.mutex("busy").acquire(timeout=30)
    answers.put("granted")
    guard.release()
    one_line = asyncio.run(latchkey.lock("busy", scope=url, timeout=30))
    one_line.release()
    answers.put("one-line lock")


def _use_the_parents_scope(url):
    try:
        _PARENT_SCOPES[url].mutex("busy").try_acquire()
        return "acted for the parent"
    except latchkey.HandleLost:
        return "HandleLost"


_PARENT_SCOPES = {}


def test_a_child_forked_after_its_parent_waited_waits_in_a_scope_of_its_own(scope, url):
    import asyncio
    import multiprocessing

    _PARENT_SCOPES[url] = scope
    held = scope.mutex("busy").acquire()
    # The parent waits once (its timer and waiter threads run), and opens the one-line
    # lock's scope: neither is in a forked child.
    try:
        scope.mutex("busy").acquire(timeout=0.05)
    except latchkey.Timeout:
        pass
    asyncio.run(latchkey.lock("other", scope=url)).release()
    fork = multiprocessing.get_context("fork")
    answers = fork.Queue()
    child = fork.Process(target=_wait_in_a_forked_child, args=(url, answers))
    child.start()
    try:
        assert answers.get(timeout=30) == "timed out"
        assert answers.get(timeout=30) == ("inherited", "HandleLost")
        held.release()
        assert answers.get(timeout=30) == "granted"
        assert answers.get(timeout=30) == "one-line lock"
        child.join(30)
        assert child.exitcode == 0
    finally:
        if child.is_alive():
            child.kill()


def test_a_wait_inherited_by_a_forked_child_is_cancelled_there_at_once(scope):
    """Review finding: a Pending of the parent's, cancelled in a forked child, waited for
    ever for a task of the parent's runtime, which has no thread in the child."""
    lock = scope._scope.open_lock("inherited", 1)
    held = lock.try_acquire(1)
    pending = lock.start_acquire(1, None, lambda guard, error: None)
    for _ in range(600):
        if scope.inspect("inherited")["waiters"] == 1:
            break
        time.sleep(0.01)
    done = 0
    pid = os.fork()
    if pid == 0:
        pending.cancel()
        os._exit(0)
    try:
        for _ in range(600):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
                break
            time.sleep(0.05)
        else:
            raise AssertionError("cancel() of an inherited wait hung in the forked child")
    finally:
        if not done:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    assert scope.inspect("inherited")["waiters"] == 1, "the parent's wait is the parent's"
    pending.cancel()
    held.release()
    assert scope.inspect("inherited")["waiters"] == 0
