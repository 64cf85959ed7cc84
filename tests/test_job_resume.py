"""Acceptance 2 of issue 5: a training process killed with SIGKILL, then retried, resumes.

The kill comes from outside, as the kernel's OOM killer would send it: the
test finds the job's `python -m worker.train` process under the real worker
and SIGKILLs it near step 30 of 100. The job fails; POST /retry queues it
again; the new attempt resumes from the last complete checkpoint and
finishes at step 100 with an adapter that PEFT loads like any other.
"""
from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import zipfile
from typing import Any

import httpx
import psutil
import pytest

from tests.helpers.api import job_body, read_events
from tests.helpers.stack import ROOT, Stack, wait_until

pytestmark = pytest.mark.integration

STEPS = 100
LOAD_ADAPTER = r"""
import json, sys, torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer
base_path, adapter_dir = sys.argv[1:]
tok = AutoTokenizer.from_pretrained(adapter_dir)
ids = tok("### Instruction:\nConvert to uppercase.\n\n### Input:\nhello\n\n### Response:\n", return_tensors="pt").input_ids
base = AutoModelForCausalLM.from_pretrained(base_path).eval()
with torch.no_grad():
    before = base(ids).logits
    model = PeftModel.from_pretrained(base, adapter_dir).eval()
    after = model(ids).logits
print(json.dumps({"type": type(model).__name__, "diff": (after - before).abs().max().item()}))
"""


def _job(client: httpx.Client, job_id: str) -> dict[str, Any]:
    response = client.get(f"/api/v1/jobs/{job_id}")
    assert response.status_code == 200, response.text
    return dict(response.json())


def _trainer(stack: Stack) -> psutil.Process | None:
    try:
        children = psutil.Process(stack.procs["worker"].pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return None
    found = [c for c in children if "worker.train" in " ".join(c.cmdline())]
    return found[0] if found else None


def _finished(client: httpx.Client, job_id: str, timeout: float) -> dict[str, Any]:
    return wait_until(lambda: (j := _job(client, job_id))["status"] in {"succeeded", "failed", "cancelled"} and j,
                      timeout, f"job {job_id} did not finish within {timeout}s")


def test_a_killed_trainer_resumes_on_retry_and_finishes_at_step_100(stack: Stack, client: httpx.Client) -> None:
    body = job_body(hyperparameters={"max_steps": STEPS, "checkpoint_every": 10, "keep_checkpoints": 2,
                                     "eval_count": 16, "eval_every": 25, "sample_every": 50})
    created = client.post("/api/v1/jobs", json=body)
    assert created.status_code == 201, created.text
    job_id = created.json()["id"]

    wait_until(lambda: _job(client, job_id)["progress"]["step"] >= 30, 300, "the job never reached step 30")
    trainer = _trainer(stack)
    assert trainer is not None
    os.kill(trainer.pid, signal.SIGKILL)
    failed = _finished(client, job_id, 60)
    assert failed["status"] == "failed" and "SIGKILL" in (failed["error"] or ""), failed
    killed_at = failed["progress"]["step"]
    checkpoints = [c["step"] for c in client.get(f"/api/v1/jobs/{job_id}/checkpoints").json()["data"]]
    assert checkpoints and checkpoints[-1] == killed_at // 10 * 10 and len(checkpoints) <= 2
    resume_point = checkpoints[-1]
    assert 30 <= resume_point < STEPS
    print(f"killed at step {killed_at}; resuming from checkpoint-{resume_point}")  # the figure, in -s runs

    retried = client.post(f"/api/v1/jobs/{job_id}/retry")
    assert retried.status_code == 200, retried.text
    done = _finished(client, job_id, 300)
    assert done["status"] == "succeeded", done
    assert done["progress"]["step"] == STEPS and done["attempt"] == 2

    # The stream: the second attempt's metrics start right after the checkpoint and run to 100.
    events = read_events(client, job_id, timeout=60)
    attempt_starts = [i for i, e in enumerate(events) if e["event"] == "status" and e["data"].get("status") == "running"]
    assert len(attempt_starts) == 2
    second = events[attempt_starts[1]:]
    second_steps = [e["data"]["step"] for e in second if e["event"] == "metric"]
    assert second_steps == list(range(resume_point + 1, STEPS + 1))
    assert [e["data"].get("resumed") for e in second if e["event"] == "metric"][:2] == [True, None]
    assert [e["data"]["resumed_from"] for e in second if e["event"] == "log" and "resumed_from" in e["data"]] == [resume_point]

    # The API's history is one line: every step once, the marker where it resumed.
    metrics = client.get(f"/api/v1/jobs/{job_id}/metrics").json()["data"]
    assert [m["step"] for m in metrics] == list(range(1, STEPS + 1))
    assert [m["step"] for m in metrics if m.get("resumed")] == [resume_point + 1]
    assert [m["step"] for m in metrics if "eval_loss" in m] == [25, 50, 75, 100]
    assert all("memory_mb" in m and "elapsed_seconds" in m for m in metrics)
    samples = client.get(f"/api/v1/jobs/{job_id}/samples").json()["data"]
    assert [s["step"] for s in samples] == [50] * 3 + [100] * 3
    assert [c["step"] for c in client.get(f"/api/v1/jobs/{job_id}/checkpoints").json()["data"]] == [90, 100]

    # The adapter is what an uninterrupted run's is: a PEFT folder that PeftModel loads.
    download = client.get(f"/api/v1/jobs/{job_id}/adapter")
    assert download.status_code == 200
    adapter_dir = stack.data_dir / f"resumed-{job_id}"
    with zipfile.ZipFile(io.BytesIO(download.content)) as archive:
        archive.extractall(adapter_dir)
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in adapter_dir.iterdir()}
    training = json.loads((adapter_dir / "tunedeck_training.json").read_text())
    assert training["steps"] == STEPS
    proc = subprocess.run([sys.executable, "-c", LOAD_ADAPTER, str(stack.data_dir / "models" / "demo"), str(adapter_dir)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    assert loaded["type"] == "PeftModelForCausalLM" and loaded["diff"] > 1e-3
