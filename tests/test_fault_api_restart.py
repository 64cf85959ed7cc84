"""The API process dies while a client watches a job's events; it comes back on the same port.

The client behaves like a browser's EventSource: when the stream breaks it
reconnects with `Last-Event-ID` until it gets through, and reads on. Expected:
every event of the job once, in order, with nothing missed, up to its end.
"""
from __future__ import annotations

import signal
import time

import pytest

from tests.helpers.chaos_stack import Watcher, chaos_stack, stored_events, submit, wait_status
from tests.helpers.api import job_body
from tests.helpers.stack import wait_until

pytestmark = [pytest.mark.chaos, pytest.mark.integration]


@pytest.mark.timeout(300)
def test_sse_clients_reconnect_after_an_api_restart_and_miss_nothing(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with chaos_stack(tmp_path) as stack, stack.client() as client:
        job_id = submit(client, job_body(hyperparameters={"max_steps": 30, "batch_size": 4, "checkpoint_every": 0}))
        watcher = Watcher(stack, job_id, time.monotonic() + 240)
        watcher.start()
        wait_until(lambda: any(kind == "metric" and data.get("step", 0) >= 4 for _, kind, data in watcher.events),
                   120, "no metric events reached the watcher")

        stack.stop("api", signal.SIGKILL)  # no graceful shutdown: the stream is cut mid-job
        seen_before_restart = len(watcher.events)
        time.sleep(1.5)  # events go on while nobody serves them
        stack.start_api()

        done = wait_status(client, job_id, {"succeeded", "failed", "cancelled"}, 180)
        watcher.join(timeout=60)

    assert done["status"] == "succeeded", done
    assert watcher.ended and watcher.connections >= 2
    ids = [seq for seq, _, _ in watcher.events]
    assert ids == list(range(1, len(ids) + 1)), "events were missed or repeated across the restart"
    assert ids == [e.seq for e in stored_events(stack, job_id)]
    assert 0 < seen_before_restart < len(ids)
    steps = [data["step"] for _, kind, data in watcher.events if kind == "metric"]
    assert steps == list(range(1, 31))
