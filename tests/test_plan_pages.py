"""The catalog page (admins edit, others only read), stored plans on the page, and a job's plan against its run."""
from __future__ import annotations

import re
import subprocess
import sys

import httpx
import pytest

from tests.helpers.api import job_body, read_events
from tests.helpers.stack import ROOT, Stack

pytestmark = pytest.mark.integration

TINY = ('{"model_type": "llama", "hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, '
        '"num_key_value_heads": 2, "intermediate_size": 344, "vocab_size": 1000, "max_position_embeddings": 1024}')


@pytest.fixture(scope="module")
def dave(stack: Stack) -> str:
    run = lambda *a: subprocess.run([sys.executable, "-m", "app.cli", *a], env=stack.env, cwd=ROOT,  # noqa: E731
                                    capture_output=True, text=True, timeout=60)
    run("create-user", "--email", "plan-dave@example.com", "--password", "password of dave")
    result = run("create-token", "--email", "plan-dave@example.com")
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def test_admin_edits_the_catalog_and_plans_use_it(client: httpx.Client) -> None:
    page = client.get("/plan/catalog")
    assert page.status_code == 200 and 'data-gpu="H200"' in page.text and 'data-model="gemma-2-27b"' in page.text
    assert 'action="/plan/catalog/gpus"' in page.text  # the admin gets the forms
    saved = client.post("/plan/catalog/gpus", data={"name": "A10G", "price_per_hour": "7.25"}, follow_redirects=False)
    assert saved.status_code == 303
    gpu = next(g for g in client.get("/api/v1/plan/catalog").json()["gpus"] if g["name"] == "A10G")
    assert gpu["price_per_hour"] == 7.25 and gpu["memory_bytes"] > 20 * 2**30  # the rest kept
    added = client.post("/plan/catalog/gpus", data={"name": "Test GPU 9000", "memory_gib": "64", "bf16_tflops": "500",
                                                    "price_per_hour": "3", "utilisation": "0.5"}, follow_redirects=False)
    assert added.status_code == 303
    arch = client.post("/plan/catalog/models", data={"id": "tiny-test", "name": "Tiny test", "config": TINY},
                       follow_redirects=False)
    assert arch.status_code == 303
    answer = client.post("/api/v1/plan", json={"model": "tiny-test", "methods": ["lora"], "seq_len": 128,
                                               "gpus": ["Test GPU 9000", "A10G"], "dataset_tokens": 10**9}).json()
    rows = {g["name"]: g for g in answer["estimates"][0]["gpus"]}
    assert rows["A10G"]["cost"] == pytest.approx(rows["A10G"]["seconds"] / 3600 * 7.25, rel=1e-3)
    assert rows["Test GPU 9000"]["headroom_bytes"] > 60 * 2**30
    bad = client.post("/plan/catalog/models", data={"id": "broken", "name": "Broken", "config": '{"model_type": "llama"}'})
    assert bad.status_code == 422 and "config.hidden_size" in bad.text


def test_non_admin_sees_the_catalog_but_cannot_edit(stack: Stack, dave: str) -> None:
    with stack.client(token=dave) as user:
        page = user.get("/plan/catalog")
        assert page.status_code == 200 and 'data-gpu="RTX 4090"' in page.text
        assert 'action="/plan/catalog/gpus"' not in page.text
        assert user.post("/plan/catalog/gpus", data={"name": "RTX 4090", "price_per_hour": "0.01"}).status_code == 403
        assert user.post("/plan/catalog/models", data={"id": "x", "name": "x", "config": TINY}).status_code == 403
        gpu = next(g for g in user.get("/api/v1/plan/catalog").json()["gpus"] if g["name"] == "RTX 4090")
        assert gpu["price_per_hour"] != 0.01


def test_page_plans_are_stored_on_save_and_reopen(stack: Stack, dave: str) -> None:
    with stack.client(token=dave) as user:
        table = user.post("/plan/save", data={"model": "qwen2.5-7b", "seq_len": "1536", "batch_size": "2",
                                              "gpus": ["L40S"], "dataset_tokens": "5000000"})
        assert table.status_code == 200
        plan_id = re.search(r'id="plan-link" href="/plan\?plan=([0-9a-f]+)"', table.text).group(1)  # type: ignore[union-attr]
        stored = user.get(f"/api/v1/plans/{plan_id}").json()
        assert stored["request"]["model"] == "qwen2.5-7b" and stored["request"]["seq_len"] == 1536
        reopened = user.get(f"/plan?plan={plan_id}")
        assert reopened.status_code == 200 and 'id="reopened"' in reopened.text
        assert 'value="1536"' in reopened.text and 'data-gpu="L40S"' in reopened.text
        assert f'href="/plan?plan={plan_id}"' in user.get("/plan").text  # listed under recent plans
        bad = user.post("/plan/table", data={"model": "qwen2.5-7b", "seq_len": "64", "gpus": ["No Such GPU"]})
        assert bad.status_code == 422 and 'data-field="gpus.0"' in bad.text


def test_job_stores_its_plan_and_shows_it_against_the_run(client: httpx.Client) -> None:
    created = client.post("/api/v1/jobs", json=job_body(hyperparameters={"max_steps": 6, "batch_size": 4, "seq_len": 128}))
    assert created.status_code == 201, created.text
    job = created.json()
    plan = job["plan"]
    assert plan["method"] == "lora" and plan["precision"] == "fp32"
    assert 0 < plan["tokens_per_step"] <= 4 * 128  # the dataset's real tokens per step (rows are shorter than 128)
    assert plan["tensor_peak_bytes"] > 0 and plan["flops_per_step"] > 0 and job["measured"] is None
    events = read_events(client, job["id"])
    assert events[-1]["data"]["status"] == "succeeded", events[-5:]
    done = client.get(f"/api/v1/jobs/{job['id']}").json()
    measured = done["measured"]
    assert measured["peak_kind"] == "process_rss" and measured["tokens_per_second"] > 0
    assert measured["peak_memory_bytes"] > plan["tensor_peak_bytes"]  # the process holds the tensors and more
    assert measured["trainable_params"] == plan["trainable_params"]  # the planner counts what peft builds
    page = client.get(f"/jobs/{job['id']}")
    assert 'id="plan-vs-measured"' in page.text and f'data-predicted="{plan["tensor_peak_bytes"]}"' in page.text
    fragment = client.get(f"/jobs/{job['id']}/plan")
    assert f'data-measured="{measured["peak_memory_bytes"]}"' in fragment.text and "TFLOP/s sustained" in fragment.text
