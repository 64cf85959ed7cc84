"""Acceptance 4 of issue 5: after every process restarts, a finished job's history is all there.

A job with evaluation, samples and checkpoints runs to the end on a private
stack; then the API, the worker and Redis are stopped, Redis's files are
deleted (the harder case: the live streams are gone, so everything must come
from the database) and all three are started again. The API's events,
metrics, samples and checkpoints and the job page's stream must return
exactly what they returned before, and the job page (its stream and its
checkpoint list) shows every log line, sample, chart point and checkpoint.
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers.chaos_stack import chaos_stack, submit, wait_status
from tests.helpers.api import job_body, read_events
from tests.helpers.stack import Stack

pytestmark = pytest.mark.integration


def _history(client: httpx.Client, job_id: str) -> dict[str, Any]:
    job = client.get(f"/api/v1/jobs/{job_id}").json()
    return {
        "events": read_events(client, job_id, timeout=60),
        "metrics": client.get(f"/api/v1/jobs/{job_id}/metrics").json(),
        "samples": client.get(f"/api/v1/jobs/{job_id}/samples").json(),
        "checkpoints": client.get(f"/api/v1/jobs/{job_id}/checkpoints").json(),
        "job": {k: job[k] for k in ("status", "progress", "metrics", "summary", "attempt", "error")},
    }


def _page(client: httpx.Client, job_id: str) -> dict[str, Any]:
    """What the job page shows: its stream's log lines, samples and chart points, and its checkpoint list."""
    page = client.get(f"/jobs/{job_id}")
    assert page.status_code == 200
    frames: list[tuple[str, str]] = []
    kind, data = "", []
    with client.stream("GET", f"/jobs/{job_id}/live", timeout=60) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("event: "):
                kind = line[len("event: "):]
            elif line.startswith("data: ") or line == "data:":
                data.append(line[len("data: "):])
            elif not line and kind:
                frames.append((kind, "\n".join(data)))
                kind, data = "", []
    points = [json.loads(data) for kind, data in frames if kind == "metric"]
    checkpoints = client.get(f"/jobs/{job_id}/checkpoints")
    assert checkpoints.status_code == 200
    return {
        "log_lines": sum(1 for kind, _ in frames if kind == "log"),
        "samples": [data for kind, data in frames if kind == "sample"],
        "chart_steps": [p["step"] for p in points],
        "eval_steps": [p["step"] for p in points if "eval_loss" in p],
        "checkpoint_list": re.findall(r"checkpoint-\d+", checkpoints.text),
    }


def test_a_finished_jobs_history_survives_restarting_api_worker_and_redis(tmp_path: Path) -> None:
    with chaos_stack(tmp_path) as stack, stack.client() as client:
        job_id = submit(client, job_body(hyperparameters={
            "max_steps": 20, "checkpoint_every": 10, "eval_count": 16, "eval_every": 10, "sample_every": 10,
        }))
        wait_status(client, job_id, {"succeeded", "failed"}, 300)
        before = _history(client, job_id)
        page_before = _page(client, job_id)

        assert before["job"]["status"] == "succeeded", before["job"]
        assert [m["step"] for m in before["metrics"]["data"]] == list(range(1, 21))
        assert [m["step"] for m in before["metrics"]["data"] if "eval_loss" in m] == [10, 20]
        assert before["samples"]["count"] == 6
        assert [c["step"] for c in before["checkpoints"]["data"]] == [10, 20]
        logs = [e for e in before["events"] if e["event"] == "log"]
        assert page_before["log_lines"] == len(logs) > 20
        assert len(page_before["samples"]) == 6
        assert page_before["chart_steps"] == list(range(1, 21)) and page_before["eval_steps"] == [10, 20]
        assert sorted(set(page_before["checkpoint_list"])) == ["checkpoint-10", "checkpoint-20"]

        _restart_everything(stack)

        after = _history(client, job_id)
        assert after == before
        assert _page(client, job_id) == page_before


def _restart_everything(stack: Stack) -> None:
    for name in ("api", "worker", "redis"):
        stack.stop(name)
    shutil.rmtree(stack.data_dir / "redis", ignore_errors=True)
    stack.start_redis()
    stack.start_worker()
    stack.start_api()
    stack.wait_for_workers(1)
