"""Held-out exact match through the product: a job with held-out rows, run by the real worker, reports
`eval_exact_match` in its metric history, its summary (JSON and the page's fragment) and the page's stream,
and the job page charts it."""
from __future__ import annotations

import json
import re
from typing import Any

import httpx
import pytest

from tests.helpers.api import job_body, read_events
from tests.helpers.chaos_stack import submit, wait_status
from tests.helpers.stack import Stack

pytestmark = pytest.mark.integration

WORDS = ("apple", "river", "stone", "cloud", "tiger", "green", "light", "house")


@pytest.fixture(scope="module")
def job(stack: Stack) -> dict[str, Any]:
    """A finished LoRA job on an always-"yes" task, 8 rows held out, evaluated every 10 of 20 steps."""
    rows = "".join(json.dumps({"prompt": f"{a} {b}?", "completion": "yes"}) + "\n" for a in WORDS for b in WORDS)
    with stack.client() as client:
        uploaded = client.post("/api/v1/datasets", files={"file": ("yes.jsonl", rows.encode(), "application/jsonl")})
        assert uploaded.status_code == 201, uploaded.text
        body = job_body(dataset=uploaded.json()["id"], hyperparameters={
            "max_steps": 20, "learning_rate": 3e-3, "eval_count": 8, "eval_every": 10})
        job_id = submit(client, body)
        return wait_status(client, job_id, {"succeeded", "failed", "cancelled"}, 300)


def test_the_job_succeeds(job: dict[str, Any]) -> None:
    assert job["status"] == "succeeded", job


def test_metrics_list_exact_match_at_every_eval_step(client: httpx.Client, job: dict[str, Any]) -> None:
    points = client.get(f"/api/v1/jobs/{job['id']}/metrics").json()["data"]
    assert [p["step"] for p in points if "eval_exact_match" in p] == [10, 20]
    assert [p["step"] for p in points if "eval_loss" in p] == [10, 20]
    assert all(0.0 <= p["eval_exact_match"] <= 1.0 for p in points if "eval_exact_match" in p)


def test_the_job_summary_has_the_final_exact_match(client: httpx.Client, job: dict[str, Any]) -> None:
    points = client.get(f"/api/v1/jobs/{job['id']}/metrics").json()["data"]
    assert job["summary"]["eval_exact_match"] == points[-1]["eval_exact_match"]
    assert job["summary"]["eval_loss"] == points[-1]["eval_loss"]


def test_the_summary_fragment_shows_the_final_exact_match_as_a_percentage(
    client: httpx.Client, job: dict[str, Any]
) -> None:
    fragment = client.get(f"/jobs/{job['id']}/summary")
    assert fragment.status_code == 200
    shown = re.search(r'<dt>Held-out exact match</dt><dd><span id="eval-exact-match">([\d.]+)%</span>', fragment.text)
    assert shown is not None, fragment.text
    assert float(shown.group(1)) == round(100 * job["summary"]["eval_exact_match"], 1)
    before = re.search(r'id="eval-exact-match-before">\(base model before training: ([\d.]+)%\)', fragment.text)
    assert before is not None, fragment.text
    assert float(before.group(1)) == round(100 * job["summary"]["eval_before"]["eval_exact_match"], 1)


def test_the_summary_has_the_base_models_scores_from_before_the_first_step(
    client: httpx.Client, job: dict[str, Any]
) -> None:
    before = job["summary"]["eval_before"]
    assert set(before) == {"eval_loss", "eval_exact_match"}
    assert before["eval_exact_match"] < job["summary"]["eval_exact_match"]  # the task was learnt
    assert before["eval_loss"] > job["summary"]["eval_loss"]
    logs = [e["data"] for e in read_events(client, job["id"]) if e["event"] == "log"]
    baseline = [d for d in logs if "baseline" in d]
    assert len(baseline) == 1 and baseline[0]["baseline"] == before
    assert baseline[0]["message"].startswith("Held-out before training: loss ")


def test_the_page_stream_sends_exact_match_with_the_chart_points(client: httpx.Client, job: dict[str, Any]) -> None:
    points = []
    with client.stream("GET", f"/jobs/{job['id']}/live", timeout=60) as response:
        kind = ""
        for line in response.iter_lines():
            if line.startswith("event: "):
                kind = line[len("event: "):]
            elif line.startswith("data: ") and kind == "metric":
                points.append(json.loads(line[len("data: "):]))
    assert [p["step"] for p in points if "eval_exact_match" in p] == [10, 20]


def test_the_loss_chart_has_an_exact_match_series_on_a_percent_axis(client: httpx.Client, job: dict[str, Any]) -> None:
    page = client.get(f"/jobs/{job['id']}")
    chart = re.search(r'<div id="loss-chart"[^>]*>', page.text)
    assert chart is not None
    assert 'data-metrics="loss,eval_loss,eval_exact_match"' in chart.group(0)
    assert 'data-percent="eval_exact_match"' in chart.group(0)
    glue = client.get("/static/js/job.js").text
    assert "el.dataset.percent" in glue and 'range: [0, 100]' in glue
