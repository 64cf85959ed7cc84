"""A pool child is never forked in the middle of the reconciler's round (worker/fork_guard.py)."""
from __future__ import annotations

import os
import threading
import time

import pytest

from worker.fork_guard import no_fork_inside

pytestmark = pytest.mark.unit


def _fork_child_that_takes_the_guard() -> int:
    pid = os.fork()
    if pid == 0:  # the child: the guard must be free here, or this blocks and the alarm kills it
        import signal

        signal.alarm(5)
        with no_fork_inside():
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    return status


def test_a_fork_waits_for_the_guarded_section_and_the_child_starts_with_the_guard_free() -> None:
    inside, release = threading.Event(), threading.Event()

    def round_in_a_thread() -> None:
        with no_fork_inside():
            inside.set()
            release.wait(5)

    thread = threading.Thread(target=round_in_a_thread)
    thread.start()
    inside.wait(5)
    threading.Timer(0.5, release.set).start()
    started = time.monotonic()
    status = _fork_child_that_takes_the_guard()
    waited = time.monotonic() - started
    thread.join()
    assert waited >= 0.4, waited
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status


def test_the_guard_is_free_again_in_the_parent_after_a_fork() -> None:
    assert os.WEXITSTATUS(_fork_child_that_takes_the_guard()) == 0
    with no_fork_inside():
        pass
