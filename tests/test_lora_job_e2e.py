"""Acceptance 2 and 3 of the walking skeleton, through the API alone with real processes."""
from __future__ import annotations

import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import httpx
import pytest

from tests.helpers.api import job_body, read_events

pytestmark = pytest.mark.integration

COMPARE_LOGITS = r"""
import json, sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from peft import PeftModel
base_path, adapter_dir = sys.argv[1], sys.argv[2]
tok = AutoTokenizer.from_pretrained(adapter_dir)
ids = tok("### Instruction:\nConvert to uppercase.\n\n### Input:\nhello\n\n### Response:\n", return_tensors="pt").input_ids
base = AutoModelForCausalLM.from_pretrained(base_path).eval()
with torch.no_grad():
    base_logits = base(ids).logits
model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_path), adapter_dir).eval()
with torch.no_grad():
    tuned_logits = model(ids).logits
print(json.dumps({"max_abs_diff": (tuned_logits - base_logits).abs().max().item(),
                  "type": type(model).__name__}))
"""


def _upload_demo_like_dataset(client: httpx.Client, stack) -> str:
    rows = (stack.data_dir / "datasets" / "demo.jsonl").read_text().splitlines()[:200]
    response = client.post("/api/v1/datasets", files={"file": ("upper.jsonl", ("\n".join(rows) + "\n").encode())})
    assert response.status_code == 201, response.text
    return response.json()["id"]


@pytest.fixture(scope="module")
def finished_lora_job(stack) -> dict:
    with stack.client() as client:
        dataset = _upload_demo_like_dataset(client, stack)
        created = client.post("/api/v1/jobs", json=job_body(dataset=dataset))
        assert created.status_code == 201, created.text
        assert created.json()["status"] == "queued"
        job_id = created.json()["id"]
        events = read_events(client, job_id)
        job = client.get(f"/api/v1/jobs/{job_id}").json()
    return {"id": job_id, "events": events, "job": job}


def test_the_stream_has_a_metric_per_step_and_the_loss_goes_down(finished_lora_job: dict) -> None:
    events = finished_lora_job["events"]
    metrics = [e["data"] for e in events if e["event"] == "metric"]
    assert [m["step"] for m in metrics] == list(range(1, 41))
    for m in metrics:
        assert {"step", "loss", "learning_rate", "tokens_per_second"} <= set(m)
    assert metrics[-1]["loss"] < metrics[0]["loss"]


def test_every_event_has_an_increasing_id_and_the_stream_ends_with_the_terminal_status(finished_lora_job: dict) -> None:
    events = finished_lora_job["events"]
    assert [e["id"] for e in events] == list(range(1, len(events) + 1))
    assert {e["event"] for e in events} <= {"log", "metric", "status"}
    assert events[0] == {"id": 1, "event": "status", "data": {"status": "queued"}}
    assert events[-1]["event"] == "status" and events[-1]["data"]["status"] == "succeeded"
    assert any(e["event"] == "log" for e in events)


def test_the_job_reports_progress_metrics_and_measurements(finished_lora_job: dict) -> None:
    job = finished_lora_job["job"]
    assert job["status"] == "succeeded" and job["error"] is None
    assert job["progress"] == {"step": 40, "total": 40}
    assert job["metrics"]["step"] == 40 and "loss" in job["metrics"]
    assert job["peak_memory_bytes"] > 0
    assert job["summary"]["trainable_params"] > 0


def test_reconnecting_with_last_event_id_gives_exactly_the_remaining_events(stack, finished_lora_job: dict) -> None:
    events = finished_lora_job["events"]
    with stack.client() as client:
        for cut in (0, 1, 17, len(events) - 1):
            rest = read_events(client, finished_lora_job["id"], last_event_id=events[cut]["id"])
            assert rest == events[cut + 1:]


def test_the_adapter_zip_loads_with_stock_peft_and_changes_the_logits(stack, finished_lora_job: dict, tmp_path: Path) -> None:
    with stack.client() as client:
        response = client.get(f"/api/v1/jobs/{finished_lora_job['id']}/adapter")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    names = set(archive.namelist())
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json"} <= names
    folder = tmp_path / "adapter"
    archive.extractall(folder)
    assert json.loads((folder / "adapter_config.json").read_text())["peft_type"] == "LORA"
    base = stack.data_dir / "models" / "demo"
    result = subprocess.run([sys.executable, "-c", COMPARE_LOGITS, str(base), str(folder)],
                            capture_output=True, text=True, timeout=180, env=stack.env)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["type"] == "PeftModelForCausalLM"
    assert report["max_abs_diff"] > 1e-3


def test_the_adapter_is_404_before_the_job_succeeded(stack) -> None:
    with stack.client() as client:
        job = client.post("/api/v1/jobs", json=job_body(hyperparameters={"max_steps": 5})).json()
        assert client.get(f"/api/v1/jobs/{job['id']}/adapter").status_code == 404
        client.post(f"/api/v1/jobs/{job['id']}/cancel")
        read_events(client, job["id"])  # let it finish so the worker is free again
