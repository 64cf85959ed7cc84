"""POST /api/v1/plan, /plan/fit and GET /plan/catalog on an app holding only the plan router.

The database is a real SQLite file, migrated by the models' metadata and seeded
from the repository's catalogs, as on first start; the caller is a real user row.
"""
from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from app.api.deps import get_dataset_tokens
from app.api.routes.plan import router
from app.models import PlanRecord
from app.planner.service import dataset_file_tokens
from app.methods import METHODS
from tests.helpers.demo_config import DEMO
from tests.helpers.router_app import router_app

pytestmark = pytest.mark.unit


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with router_app(tmp_path, api=(router,), email="planner@example.com") as app:
        yield app.client


def _plan(client: TestClient, **body: Any) -> Any:
    return client.post("/api/v1/plan", json={"model": "llama-3.1-8b", **body})


def _loc(response: Any) -> list[Any]:
    assert response.status_code == 422, response.text
    return response.json()["detail"][0]["loc"]


def test_catalog_lists_models_and_gpus(client: TestClient) -> None:
    body = client.get("/api/v1/plan/catalog").json()
    assert {"demo", "llama-2-7b", "qwen2.5-72b", "gemma-2-27b", "phi-3-mini"} <= {m["id"] for m in body["models"]}
    assert {"RTX 4090", "H100 80GB", "H200"} <= {g["name"] for g in body["gpus"]}
    assert body["runtime"]["cuda_context_bytes"] > 0 and body["as_of"]["gpus"]


def test_full_comparison_answers_every_method_on_every_gpu(client: TestClient) -> None:
    gpus = ["RTX 3090", "RTX 4090", "L4", "A10G", "A100 40GB", "A100 80GB", "L40S", "H100 80GB", "H200"]
    response = _plan(client, seq_len=2048, gradient_checkpointing=True, dataset_tokens=5_000_000, gpus=gpus)
    assert response.status_code == 200, response.text
    body = response.json()
    assert [e["method"] for e in body["estimates"]] == list(METHODS)
    for estimate in body["estimates"]:
        parts = estimate["breakdown"]
        assert set(parts) == {"weights", "trainable_weights", "gradients", "optimizer", "activations", "logits",
                              "runtime_overhead"}
        assert estimate["peak_bytes"] == sum(parts.values())
        assert estimate["trainable_params"] > 0 and estimate["flops_per_step"] > 0 and estimate["steps"] > 0
        assert [g["name"] for g in estimate["gpus"]] == gpus
        for gpu in estimate["gpus"]:
            assert gpu["seconds"] > 0 and gpu["cost"] > 0
            assert gpu["headroom_bytes"] == client.get("/api/v1/plan/catalog").json()["gpus"][
                [g["name"] for g in client.get("/api/v1/plan/catalog").json()["gpus"]].index(gpu["name"])
            ]["memory_bytes"] - estimate["peak_bytes"]
    by_method = {e["method"]: e for e in body["estimates"]}
    assert not by_method["full"]["gpus"][1]["fits"] and by_method["qlora"]["gpus"][1]["fits"]  # on a 4090
    assert by_method["full"]["peak_bytes"] > by_method["lora"]["peak_bytes"] > by_method["qlora"]["peak_bytes"]
    assert body["badges"]["cheapest"] and body["badges"]["fastest"]


def test_config_json_instead_of_a_catalog_id(client: TestClient) -> None:
    response = client.post("/api/v1/plan", json={"config": DEMO, "methods": ["lora", "prompt"], "seq_len": 256})
    assert response.status_code == 200
    assert response.json()["estimates"][0]["trainable_params"] == 4 * 8 * (4 * 256 + 2 * 128 + 256 + 256)


def test_config_missing_a_field_names_it(client: TestClient) -> None:
    config = {k: v for k, v in DEMO.items() if k != "num_attention_heads"}
    response = client.post("/api/v1/plan", json={"config": config})
    assert _loc(response) == ["body", "config", "num_attention_heads"]


def test_unknown_catalog_model_names_model(client: TestClient) -> None:
    assert _loc(_plan(client, model="no-such-model")) == ["body", "model"]


def test_unknown_gpu_names_its_position(client: TestClient) -> None:
    assert _loc(_plan(client, gpus=["H100 80GB", "TPU v5"])) == ["body", "gpus", 1]


def test_seq_len_above_the_model_limit(client: TestClient) -> None:
    response = _plan(client, model="llama-2-7b", seq_len=8192)
    assert _loc(response) == ["body", "seq_len"] and "4096" in response.json()["detail"][0]["msg"]


def test_lora_target_the_architecture_lacks(client: TestClient) -> None:
    response = _plan(client, model="phi-3-mini", methods=["lora"], method_config={"lora": {"target_modules": "minimal"}})
    assert _loc(response) == ["body", "method_config", "lora", "target_modules"]
    assert "qkv_proj" in response.json()["detail"][0]["msg"]


def test_more_trainable_layers_than_the_model_has(client: TestClient) -> None:
    response = _plan(client, model="demo", methods=["freeze"], method_config={"freeze": {"trainable_layers": 9}})
    assert _loc(response) == ["body", "method_config", "freeze", "trainable_layers"]


def test_prompt_tokens_past_the_position_limit(client: TestClient) -> None:
    response = _plan(client, model="demo", methods=["prompt"], seq_len=500,
                     method_config={"prompt": {"num_virtual_tokens": 20}})
    assert _loc(response) == ["body", "method_config", "prompt", "num_virtual_tokens"]


def test_bad_method_option_names_method_and_option(client: TestClient) -> None:
    response = _plan(client, methods=["lora"], method_config={"lora": {"r": 0}})
    assert _loc(response) == ["body", "method_config", "lora", "r"]


def test_unknown_method_is_refused(client: TestClient) -> None:
    assert _loc(_plan(client, methods=["ia3"]))[:2] == ["body", "methods"]


def test_model_and_config_together_are_refused(client: TestClient) -> None:
    assert _plan(client, config=DEMO).status_code == 422


def test_prefix_with_checkpointing_is_estimated_without_it(client: TestClient) -> None:
    response = _plan(client, methods=["prefix"], gradient_checkpointing=True)
    assert any("prefix tuning cannot use gradient checkpointing" in n for n in response.json()["estimates"][0]["notes"])


def test_dataset_tokens_from_a_stored_dataset(client: TestClient, tmp_path: Path) -> None:
    rows = [{"prompt": "Hello", "completion": " world"}, {"messages": [{"role": "user", "content": "héllo"}]}]
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    assert dataset_file_tokens(path, 1.0) == (5 + 6 + 2) + (4 + 6 + 2)  # "héllo" is 6 bytes
    client.app.dependency_overrides[get_dataset_tokens] = lambda: (  # type: ignore[attr-defined]
        lambda dataset_id, arch: dataset_file_tokens(path, 1.0) if dataset_id == "d1" else None)
    response = _plan(client, model="demo", methods=["lora"], seq_len=16, dataset="d1", epochs=2)
    assert response.status_code == 200 and response.json()["dataset_tokens"] == 25
    assert response.json()["estimates"][0]["steps"] == 4  # ceil(25 × 2 / 16)
    assert _loc(_plan(client, model="demo", seq_len=16, dataset="missing")) == ["body", "dataset"]


def test_traced_mode_without_a_planning_worker_is_503(client: TestClient) -> None:
    assert _plan(client, methods=["lora"], mode="traced").status_code == 503


def test_make_it_fit_endpoint(client: TestClient) -> None:
    response = client.post("/api/v1/plan/fit", json={"model": "llama-3.1-8b", "methods": ["lora"], "gpus": ["RTX 4090"],
                                                     "seq_len": 2048, "batch_size": 8})
    body = response.json()
    assert response.status_code == 200 and body["fits"] and body["gpu"] == "RTX 4090"
    assert body["batch_size"] * body["gradient_accumulation"] >= 8


def test_comparison_is_fast(client: TestClient) -> None:
    body = {"model": "llama-3.1-70b", "seq_len": 4096, "batch_size": 4, "dataset_tokens": 10**8}
    client.post("/api/v1/plan", json=body)
    started = time.perf_counter()
    assert client.post("/api/v1/plan", json=body).status_code == 200
    assert time.perf_counter() - started < 0.5  # the benchmark measures the 50 ms target; this guards regressions


def test_every_plan_is_stored_with_its_owner(client: TestClient) -> None:
    response = _plan(client, methods=["lora"], gpus=["L4"])
    assert response.status_code == 200
    plan_id = response.json()["id"]
    with Session(client.app.state.engine) as session:  # type: ignore[attr-defined]
        record = session.get(PlanRecord, plan_id)
        assert record is not None and record.owner_id is not None
        assert record.request["methods"] == ["lora"] and record.result["estimates"][0]["method"] == "lora"


def test_catalog_comes_from_the_database(client: TestClient) -> None:
    from app.models import CatalogGpu

    with Session(client.app.state.engine) as session:  # type: ignore[attr-defined]
        gpu = session.get(CatalogGpu, "l4")
        assert gpu is not None
        gpu.price_per_hour = 100.0
        session.add(gpu)
        session.commit()
    row = _plan(client, methods=["lora"], gpus=["L4"], dataset_tokens=10**6).json()["estimates"][0]["gpus"][0]
    assert row["cost"] == pytest.approx(row["seconds"] / 3600 * 100.0, rel=1e-3)
