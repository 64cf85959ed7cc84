"""Pause and resume (issue 16): a running job stops at a checkpoint and ends `paused`; resuming continues
from that checkpoint to the end. A queued job pauses without ever starting. Real worker and trainer."""
from __future__ import annotations

import httpx
import pytest

from tests.helpers.api import job_body, read_events
from tests.helpers.chaos_stack import get_job, submit
from tests.helpers.stack import Stack, wait_until

pytestmark = pytest.mark.integration


def test_a_paused_job_stops_at_a_checkpoint_and_resumes_from_it_to_the_end(stack: Stack, client: httpx.Client) -> None:
    job_id = submit(client, job_body(hyperparameters={"max_steps": 60, "checkpoint_every": 0, "log_every": 1}))
    waiting = submit(client, job_body(hyperparameters={"max_steps": 3}))
    wait_until(lambda: get_job(client, job_id)["progress"]["step"] >= 3, 180, "the job never got going")
    assert client.post(f"/api/v1/jobs/{job_id}/resume").status_code == 409  # running: nothing to resume

    queued = client.post(f"/api/v1/jobs/{waiting}/pause")
    assert queued.status_code == 200 and queued.json()["status"] == "paused"
    asked = client.post(f"/api/v1/jobs/{job_id}/pause")
    assert asked.status_code == 200 and asked.json()["status"] == "pausing"
    paused = wait_until(lambda: (j := get_job(client, job_id))["status"] in {"paused", "failed", "cancelled"} and j,
                        30, "the job did not pause", interval=0.2)
    assert paused["status"] == "paused", paused
    at = paused["progress"]["step"]
    assert [c["step"] for c in client.get(f"/api/v1/jobs/{job_id}/checkpoints").json()["data"]] == [at]
    statuses = [e["data"]["status"] for e in read_events(client, job_id, timeout=30) if e["event"] == "status"]
    assert statuses[-2:] == ["pausing", "paused"]

    resumed = client.post(f"/api/v1/jobs/{job_id}/resume")
    assert resumed.status_code == 200 and resumed.json()["status"] == "queued"
    done = wait_until(lambda: (j := get_job(client, job_id))["status"] in {"succeeded", "failed"} and j, 240,
                      "the resumed job did not finish")
    assert done["status"] == "succeeded" and done["progress"]["step"] == 60
    metrics = client.get(f"/api/v1/jobs/{job_id}/metrics").json()["data"]
    assert [m["step"] for m in metrics] == list(range(1, 61))
    assert next(m for m in metrics if m["step"] == at + 1).get("resumed") is True  # continued, not restarted

    assert client.post(f"/api/v1/jobs/{waiting}/cancel").json()["status"] == "cancelled"  # a paused job cancels
    assert get_job(client, waiting)["attempt"] == 0
