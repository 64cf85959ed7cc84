"""DPO rows of the planner (issue 16): two sequences per example, a reference forward without gradients,
and for full and freeze a frozen reference copy (app/planner/dpo.py)."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.api.routes.plan import router
from app.planner.catalog import load_catalog
from app.planner.compute import flops_per_micro_batch, forward_flops
from app.planner.dpo import pairs_setup
from app.planner.memory import estimate_memory
from app.planner.params import count_params
from app.planner.setup import TrainingSetup
from tests.helpers.router_app import router_app

pytestmark = pytest.mark.unit

ARCH = load_catalog().architecture("llama-3.1-8b")


def _setup(method: str, objective: str) -> TrainingSetup:
    return TrainingSetup.build(method, {}, seq_len=1024, batch_size=2, gradient_checkpointing=True,
                               objective=objective)


def test_a_dpo_step_is_the_policy_over_both_answers_plus_a_reference_forward() -> None:
    dpo = _setup("lora", "dpo")
    pairs = pairs_setup(dpo)
    assert pairs.batch_size == 4
    assert flops_per_micro_batch(ARCH, dpo) == flops_per_micro_batch(ARCH, pairs) + forward_flops(ARCH, pairs)
    assert flops_per_micro_batch(ARCH, dpo) > 2 * flops_per_micro_batch(ARCH, _setup("lora", "sft"))


def test_lora_dpo_uses_the_adapter_off_as_reference_and_full_a_frozen_copy() -> None:
    lora_sft, lora_dpo = estimate_memory(ARCH, _setup("lora", "sft")), estimate_memory(ARCH, _setup("lora", "dpo"))
    assert lora_dpo.peak > lora_sft.peak  # twice the sequences, full log-softmaxes
    assert lora_dpo.breakdown["weights"] == lora_sft.breakdown["weights"]  # no second copy
    full = estimate_memory(ARCH, _setup("full", "dpo"))
    policy = estimate_memory(ARCH, pairs_setup(_setup("full", "dpo")))
    copy = 2 * count_params(ARCH).total  # bf16
    assert full.phases["forward"] == policy.phases["forward"] + copy
    assert any("frozen reference copy" in note for note in full.notes)


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with router_app(tmp_path, api=(router,), email="dpo-planner@example.com") as app:
        yield app.client


def test_a_dpo_plan_lists_the_methods_that_take_it_and_refuses_one_that_does_not(client: TestClient) -> None:
    plan = client.post("/api/v1/plan", json={"model": "llama-3.1-8b", "objective": "dpo", "seq_len": 1024})
    assert plan.status_code == 200, plan.text
    assert [e["method"] for e in plan.json()["estimates"]] == ["full", "freeze", "lora", "dora", "qlora"]
    refused = client.post("/api/v1/plan", json={"model": "llama-3.1-8b", "objective": "dpo", "methods": ["galore"]})
    assert refused.status_code == 422 and refused.json()["detail"][0]["loc"][-1] == "methods"
    traced = client.post("/api/v1/plan", json={"model": "llama-3.1-8b", "objective": "dpo", "mode": "traced"})
    assert traced.status_code == 422 and "instant mode" in traced.text
