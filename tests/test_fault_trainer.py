"""The training process raises or runs out of memory: the job fails with the error's message on its
page and in the API, and the same worker goes on to the next job.

The fault comes from TUNEDECK_FAULT in the worker's environment (the trainer
inherits it), so each fault gets its own worker on a private stack; the next
job is shorter than the faulty step, so it runs clean on that same worker.
"""
from __future__ import annotations

import html
from collections.abc import Iterator

import pytest

from tests.helpers.chaos_stack import (
    chaos_stack,
    stored_events,
    submit,
    trainer_pids,
    wait_status,
)
from tests.helpers.api import job_body
from tests.helpers.stack import Stack, wait_until

pytestmark = [pytest.mark.chaos, pytest.mark.integration]


def _body(max_steps: int) -> dict:
    return job_body(hyperparameters={"max_steps": max_steps, "batch_size": 4, "checkpoint_every": 0})


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with chaos_stack(tmp_path_factory.mktemp("trainer-faults"), worker=False) as s:
        yield s


def _fail_then_recover(stack: Stack, worker: str, fault: str, expected_error: str) -> None:
    stack.start_worker(worker, extra_env={"TUNEDECK_FAULT": fault})
    try:
        with stack.client() as client:
            failing = submit(client, _body(max_steps=6))
            following = submit(client, _body(max_steps=1))  # queued behind it on the same worker
            failed = wait_status(client, failing, {"succeeded", "failed", "cancelled"}, 150)
            assert failed["status"] == "failed", failed
            assert expected_error in failed["error"], failed["error"]
            assert failed["progress"]["step"] == int(fault.split("@step")[1])

            page = client.get(f"/jobs/{failing}")
            assert page.status_code == 200
            assert html.escape(failed["error"]) in page.text  # on the job page, escaped
            ended = [e.data for e in stored_events(stack, failing) if e.kind == "status"][-1]
            assert ended == {"status": "failed", "error": failed["error"]}  # and in the live stream's last event

            wait_until(lambda: not trainer_pids(stack, worker), 10, "the failed trainer process lingers")
            done = wait_status(client, following, {"succeeded", "failed", "cancelled"}, 120)
            assert done["status"] == "succeeded", done
            assert done["worker"] == failed["worker"] and done["worker"].startswith(f"{worker}@")
    finally:
        stack.stop(worker)


@pytest.mark.timeout(300)
def test_trainer_exception_fails_the_job_with_its_message_and_the_worker_goes_on(stack: Stack) -> None:
    _fail_then_recover(stack, "worker-raise", "raise@step3", "injected fault at step 3")


@pytest.mark.timeout(300)
def test_trainer_out_of_memory_fails_the_job_clearly_and_the_worker_goes_on(stack: Stack) -> None:
    _fail_then_recover(stack, "worker-oom", "oom@step2", "CUDA out of memory")
