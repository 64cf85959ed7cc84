"""Acceptance 1 of issue 5: cancel through the API, with the real worker and trainer.

A queued job ends `cancelled` without ever starting; a running one stops at
its next step boundary, saves a final checkpoint and ends `cancelled` within
10 seconds; the worker then takes the next job.
"""
from __future__ import annotations

import time
from typing import Any

import httpx
import psutil
import pytest

from tests.helpers.chaos_stack import get_job, submit
from tests.helpers.api import job_body, read_events
from tests.helpers.stack import Stack, wait_until

pytestmark = pytest.mark.integration


def _submit(client: httpx.Client, **hyperparameters: Any) -> str:
    return submit(client, job_body(hyperparameters=hyperparameters))


def _trainers(stack: Stack) -> list[psutil.Process]:
    """`python -m worker.train` processes under the session worker."""
    try:
        children = psutil.Process(stack.procs["worker"].pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    return [c for c in children if "worker.train" in " ".join(c.cmdline())]


def test_cancel_queued_and_running_jobs_then_the_worker_takes_the_next(stack: Stack, client: httpx.Client) -> None:
    # A long job occupies the only worker, so the second one waits in the queue.
    running = _submit(client, max_steps=5000, checkpoint_every=0, log_every=1)
    queued = _submit(client, max_steps=5)
    wait_until(lambda: get_job(client, running)["progress"]["step"] >= 3, 180, "the long job never got going")
    assert get_job(client, queued)["status"] == "queued"

    # Queued: cancelled on the spot, and it stays that way.
    response = client.post(f"/api/v1/jobs/{queued}/cancel")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"

    # Running: stops at a step boundary with a final checkpoint, within 10 s.
    trainers = _trainers(stack)
    assert len(trainers) == 1
    started = time.monotonic()
    response = client.post(f"/api/v1/jobs/{running}/cancel")
    assert response.status_code == 200 and response.json()["status"] == "cancelling"
    final = wait_until(lambda: (j := get_job(client, running))["status"] in {"cancelled", "failed", "succeeded"} and j,
                       15, "the running job did not end after cancel", interval=0.1)
    latency = time.monotonic() - started
    assert final["status"] == "cancelled", final
    assert latency < 10, f"cancel took {latency:.1f} s"
    print(f"cancel of a running job: {latency:.2f} s to `cancelled`")  # the figure, in -s runs
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in trainers)

    checkpoints = client.get(f"/api/v1/jobs/{running}/checkpoints").json()["data"]
    stopped_at = final["progress"]["step"]
    assert [c["step"] for c in checkpoints] == [stopped_at]  # checkpoint_every=0: only the cancel's
    events = read_events(client, running, timeout=30)
    logs = [e["data"] for e in events if e["event"] == "log"]
    assert [log["stopped"] for log in logs if "stopped" in log] == [{"step": stopped_at}]
    assert [log["checkpoint"]["step"] for log in logs if "checkpoint" in log] == [stopped_at]
    statuses = [e["data"]["status"] for e in events if e["event"] == "status"]
    assert statuses[-2:] == ["cancelling", "cancelled"]
    assert [e["data"]["step"] for e in events if e["event"] == "metric"] == list(range(1, stopped_at + 1))

    # The worker is free again: the next job runs to the end, and the cancelled queued one never ran.
    following = _submit(client, max_steps=3)
    wait_until(lambda: get_job(client, following)["status"] in {"succeeded", "failed"}, 180, "the next job did not finish")
    assert get_job(client, following)["status"] == "succeeded"
    never = get_job(client, queued)
    assert never["status"] == "cancelled" and never["attempt"] == 0 and never["started_at"] is None
    queued_events = read_events(client, queued, timeout=30)
    assert [e["data"]["status"] for e in queued_events if e["event"] == "status"] == ["queued", "cancelled"]
    assert not [e for e in queued_events if e["event"] in {"metric", "log"}]

    # The cancel's checkpoint is a real one: a retry resumes from it (then is cancelled again).
    seen = len(events)
    assert client.post(f"/api/v1/jobs/{running}/retry").status_code == 200
    wait_until(lambda: get_job(client, running)["progress"]["step"] > stopped_at + 1, 180, "the retry did not resume")
    client.post(f"/api/v1/jobs/{running}/cancel")
    wait_until(lambda: get_job(client, running)["status"] == "cancelled", 30, "the retry was not cancelled")
    again = read_events(client, running, last_event_id=events[-1]["id"], timeout=30)
    assert len(read_events(client, running, timeout=30)) == seen + len(again)
    resumed = [e["data"]["resumed_from"] for e in again if e["event"] == "log" and "resumed_from" in e["data"]]
    assert resumed == [stopped_at]
    metrics = [e["data"] for e in again if e["event"] == "metric"]
    assert metrics[0]["step"] == stopped_at + 1 and metrics[0]["resumed"] is True
