"""Work in the worker's own threads that must not be cut in half by a fork.

Celery forks a fresh pool child for every job (`worker_max_tasks_per_child=1`)
while the main process's reconciler thread may be inside SQLite or kombu. A
lock held at the instant of a fork stays held forever in the child: SQLite's
static mutexes are process-wide, so a child forked mid-query can hang on its
first query however fresh its own connection pool is. `os.register_at_fork`
makes a fork wait (boundedly) for the guarded section to end, and the child
starts with the guard free.
"""
from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)

# A fork waits at most this long for a guarded section; a round stuck on a dead
# database must not stop the worker from starting its next job.
FORK_WAIT_SECONDS = 30.0

_GUARD = threading.Lock()
_held_for_fork = threading.local()


@contextmanager
def no_fork_inside() -> Iterator[None]:
    """Forks of this process wait until the block ends."""
    with _GUARD:
        yield


def _before_fork() -> None:
    _held_for_fork.value = _GUARD.acquire(timeout=FORK_WAIT_SECONDS)
    if not _held_for_fork.value:
        log.warning("forking while a guarded section still runs (waited %.0f s)", FORK_WAIT_SECONDS)


def _after_fork() -> None:
    if getattr(_held_for_fork, "value", False):
        _held_for_fork.value = False
        _GUARD.release()


os.register_at_fork(before=_before_fork, after_in_parent=_after_fork, after_in_child=_after_fork)
