"""Issue 3, acceptance 1: every available method trains through the API with the real worker,
its loss goes down, and its download, loaded by the standard library in a fresh process,
gives the next-token logits the trainer reported at the end."""
from __future__ import annotations

import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from app.schemas.methods import AVAILABLE_METHODS
from tests.conftest import job_body, read_events

pytestmark = pytest.mark.integration

LOGITS_TOLERANCE = 1e-4  # float32 on the CPU: same weights, same ops, only summation order may differ

METHOD_RUNS = {
    "full": ({"optimizer": "adamw"}, 1e-3),
    "freeze": ({"trainable_layers": 2}, 1e-3),
    "lora": ({"r": 8, "target_modules": "minimal"}, 1e-3),
    "dora": ({"r": 8, "target_modules": "attention"}, 1e-3),
    "prefix": ({"num_virtual_tokens": 20}, 3e-2),
    "prompt": ({"num_virtual_tokens": 20, "init": "text", "init_text": "Convert the input as asked."}, 1e-2),
}

LOAD_AND_PROBE = r"""
import json, sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
folder, base, prompt = sys.argv[1], sys.argv[2], sys.argv[3]
cfg = folder + "/adapter_config.json"
import os
if os.path.exists(cfg):
    from peft import PeftModel
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), folder)
else:
    model = AutoModelForCausalLM.from_pretrained(folder)
model.eval()
tok = AutoTokenizer.from_pretrained(folder)
ids = tok(prompt, return_tensors="pt")
with torch.no_grad():
    logits = model(**ids).logits[0, -1]
print(json.dumps(logits.tolist()))
"""


@pytest.mark.parametrize("method", [m for m in METHOD_RUNS if m in AVAILABLE_METHODS])
def test_method_trains_and_its_download_reproduces_the_final_logits(stack, method: str, tmp_path: Path) -> None:
    options, lr = METHOD_RUNS[method]
    body = job_body(method=method, hyperparameters={"max_steps": 12, "batch_size": 4, "seq_len": 96, "learning_rate": lr})
    body["method_config"] = options
    with stack.client() as client:
        created = client.post("/api/v1/jobs", json=body)
        assert created.status_code == 201, created.text
        job_id = created.json()["id"]
        events = read_events(client, job_id)
        job = client.get(f"/api/v1/jobs/{job_id}").json()
        assert job["status"] == "succeeded", job["error"]
        archive = client.get(f"/api/v1/jobs/{job_id}/adapter")
    assert archive.status_code == 200
    losses = [e["data"]["loss"] for e in events if e["event"] == "metric"]
    assert len(losses) == 12
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3, losses
    summary = job["summary"]
    assert 0 < summary["trainable_params"] <= summary["total_params"]
    folder = tmp_path / "artifact"
    zipfile.ZipFile(io.BytesIO(archive.content)).extractall(folder)
    base = stack.data_dir / "models" / "demo"
    result = subprocess.run([sys.executable, "-c", LOAD_AND_PROBE, str(folder), str(base), summary["probe"]["prompt"]],
                            capture_output=True, text=True, timeout=180, env=stack.env)
    assert result.returncode == 0, result.stderr[-2000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    reported = summary["probe"]["next_token_logits"]
    assert len(loaded) == len(reported)
    assert max(abs(a - b) for a, b in zip(loaded, reported)) < LOGITS_TOLERANCE
