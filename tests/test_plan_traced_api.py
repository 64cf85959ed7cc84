"""POST /api/v1/plan through the real stack: the traced mode goes over the planning queue to a real worker.

Also the stored plans (list, reopen, another user's is 404) and the database
catalog the API reads, on the same running API.
"""
from __future__ import annotations

import subprocess
import sys
import time

import httpx
import pytest

from tests.helpers.stack import ROOT, Stack

pytestmark = pytest.mark.integration


def _user_token(stack: Stack, email: str) -> str:
    run = lambda *a: subprocess.run([sys.executable, "-m", "app.cli", *a], env=stack.env, cwd=ROOT,  # noqa: E731
                                    capture_output=True, text=True, timeout=60)
    run("create-user", "--email", email, "--password", "password-of-" + email)
    result = run("create-token", "--email", email)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def test_traced_plan_is_answered_by_the_planning_worker(client: httpx.Client) -> None:
    body = {"model": "demo", "methods": ["lora", "full"], "seq_len": 64, "batch_size": 2, "gpus": ["L4"],
            "mode": "traced"}
    instant = client.post("/api/v1/plan", json={**body, "mode": "instant"}).json()
    started = time.monotonic()
    response = client.post("/api/v1/plan", json=body, timeout=90)
    first = time.monotonic() - started
    assert response.status_code == 200, response.text
    traced = response.json()
    assert [e["method"] for e in traced["estimates"]] == ["lora", "full"]
    for estimate, closed_form in zip(traced["estimates"], instant["estimates"]):
        assert estimate["mode"] == "traced" and any(n.startswith("traced in") for n in estimate["notes"])
        assert estimate["peak_bytes"] != closed_form["peak_bytes"]  # a different computation, not a copy
        tensors = estimate["peak_bytes"] - estimate["breakdown"]["runtime_overhead"]
        instant_tensors = closed_form["peak_bytes"] - closed_form["breakdown"]["runtime_overhead"]
        assert abs(tensors - instant_tensors) / tensors < 0.10
    assert traced["badges"]["cheapest"] is not None
    started = time.monotonic()
    again = client.post("/api/v1/plan", json=body, timeout=90)
    assert again.status_code == 200 and again.json()["estimates"] == traced["estimates"]
    assert time.monotonic() - started < first  # the answer is cached by the request's hash
    stored = client.get(f"/api/v1/plans/{traced['id']}").json()
    assert stored["mode"] == "traced" and stored["result"]["estimates"][0]["mode"] == "traced"


def test_traced_plan_error_from_the_worker_is_422(client: httpx.Client) -> None:
    """A config the closed form reads as Llama but transformers builds as Mamba: the worker says why."""
    config = {"model_type": "mamba", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
              "intermediate_size": 128, "vocab_size": 300, "max_position_embeddings": 128}
    response = client.post("/api/v1/plan", json={"config": config, "methods": ["lora"], "seq_len": 32,
                                                 "gpus": ["L4"], "mode": "traced"}, timeout=90)
    assert response.status_code == 422, response.text
    error = response.json()["detail"][0]
    assert error["loc"] == ["body", "mode"] and "traced estimator could not run this model" in error["msg"]


def test_stored_plans_are_listed_reopened_and_private(stack: Stack, client: httpx.Client) -> None:
    token = _user_token(stack, "planner-carol@example.com")
    with stack.client(token=token) as carol:
        made = carol.post("/api/v1/plan", json={"model": "llama-3.1-8b", "methods": ["qlora"], "seq_len": 1024})
        assert made.status_code == 200, made.text
        plan_id = made.json()["id"]
        listed = carol.get("/api/v1/plans").json()
        assert listed["count"] == 1 and listed["data"][0]["id"] == plan_id
        assert listed["data"][0]["label"] == "llama-3.1-8b" and listed["data"][0]["methods"] == ["qlora"]
        reopened = carol.get(f"/api/v1/plans/{plan_id}").json()
        assert reopened["request"]["seq_len"] == 1024
        assert reopened["result"]["estimates"] == made.json()["estimates"]
        own = client.post("/api/v1/plan", json={"model": "demo", "methods": ["lora"], "seq_len": 64}).json()["id"]
        assert carol.get(f"/api/v1/plans/{own}").status_code == 404
        assert own not in {p["id"] for p in carol.get("/api/v1/plans").json()["data"]}
    assert client.get(f"/api/v1/plans/{plan_id}").status_code == 200  # the admin sees every plan
    assert client.get("/api/v1/plans/nope").status_code == 404


def test_api_catalog_is_the_seeded_database(client: httpx.Client) -> None:
    catalog = client.get("/api/v1/plan/catalog").json()
    assert {"RTX 3090", "RTX 4090", "L4", "A10G", "A100 40GB", "A100 80GB", "L40S", "H100 80GB", "H200"} <= {
        g["name"] for g in catalog["gpus"]}
    assert {"demo", "llama-2-70b", "mistral-7b", "qwen2.5-72b", "gemma-2-27b"} <= {m["id"] for m in catalog["models"]}
