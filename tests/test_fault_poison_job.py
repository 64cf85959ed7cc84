"""A job whose worker dies every time it runs it fails after TUNEDECK_MAX_ATTEMPTS, instead of
being queued again forever."""
from __future__ import annotations

import os
import signal

import pytest

from tests.helpers.chaos_stack import chaos_stack, stored_events, submit, wait_status, wait_step
from tests.helpers.api import job_body
from tests.helpers.stack import Stack, wait_until

pytestmark = [pytest.mark.chaos, pytest.mark.integration]


def _kill_worker(stack: Stack, name: str) -> None:
    worker = stack.procs.pop(name)
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait(timeout=10)


def _training_in_attempt(stack: Stack, job_id: str, attempt: int) -> bool:
    """A metric event stored after the `running` event of that attempt."""
    started = None
    for event in stored_events(stack, job_id):
        if event.kind == "status" and event.data.get("status") == "running" and event.data.get("attempt") == attempt:
            started = event.seq
        elif started is not None and event.kind == "metric":
            return True
    return False


@pytest.mark.timeout(300)
def test_job_whose_worker_keeps_dying_fails_after_max_attempts(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with chaos_stack(tmp_path, max_attempts="2") as stack, stack.client() as client:
        job_id = submit(client, job_body(hyperparameters={"max_steps": 40, "batch_size": 4, "checkpoint_every": 0}))
        wait_step(client, job_id, 2, 120)
        _kill_worker(stack, "worker")
        stack.start_worker("worker2")
        wait_until(lambda: _training_in_attempt(stack, job_id, 2), 150, "attempt 2 did not start training")
        _kill_worker(stack, "worker2")
        stack.start_worker("worker3")  # its reconciler finds the lease run out a second time
        failed = wait_status(client, job_id, {"succeeded", "failed", "cancelled"}, 120)

    assert failed["status"] == "failed", failed
    assert failed["error"] == "worker lost (attempt 2 of 2)"
    assert failed["attempt"] == 2
    statuses = [e.data for e in stored_events(stack, job_id) if e.kind == "status"]
    assert [s["attempt"] for s in statuses if s["status"] == "running"] == [1, 2]
    assert statuses[-1] == {"status": "failed", "error": "worker lost (attempt 2 of 2)"}
