"""Routing by memory class with real workers: two workers advertise different GPU memory
(TUNEDECK_ACCELERATOR_NAME / _MEMORY_GB, as a GPU would report it) and jobs land where their
planned peak fits (issue 5, DESIGN.md "Routing")."""
from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from app.routing import GIB, smallest_class_for
from tests.helpers.api import job_body
from tests.helpers.stack import Stack, running_stack, wait_until

pytestmark = pytest.mark.integration

# Llama-2 7B's numbers: a config only, so the job is planned and routed for real, and the
# worker that takes it fails at once on the missing weights instead of training 7B on a CPU.
LLAMA2_7B = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
    "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32,
    "vocab_size": 32000, "max_position_embeddings": 4096, "tie_word_embeddings": False,
    "rms_norm_eps": 1e-5, "hidden_act": "silu",
}


@pytest.fixture(scope="module")
def two_gpu_workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workers = (
        ("small", "auto", {"TUNEDECK_ACCELERATOR_NAME": "RTX 4090", "TUNEDECK_ACCELERATOR_MEMORY_GB": "23.99"}),
        ("big", "auto", {"TUNEDECK_ACCELERATOR_NAME": "H100 80GB HBM3", "TUNEDECK_ACCELERATOR_MEMORY_GB": "79.6"}),
    )
    with running_stack(tmp_path_factory.mktemp("routing"), workers=workers) as stack:
        big_model = stack.data_dir / "models" / "llama-2-7b-config"
        big_model.mkdir(parents=True)
        (big_model / "config.json").write_text(json.dumps(LLAMA2_7B))
        yield stack


def _workers(stack: Stack) -> dict[str, dict]:
    with stack.client() as client:
        return {w["hostname"].split("@")[0]: w for w in client.get("/api/v1/workers").json()["data"]}


def _finished(stack: Stack, job_id: str) -> dict:
    def done() -> dict | None:
        with stack.client() as client:
            job = client.get(f"/api/v1/jobs/{job_id}").json()
        return job if job["status"] in ("succeeded", "failed", "cancelled") else None

    try:
        return wait_until(done, 180, f"job {job_id} did not finish")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{stack.log_tails()}") from None


def test_each_worker_serves_the_memory_classes_its_accelerator_holds(two_gpu_workers: Stack) -> None:
    workers = _workers(two_gpu_workers)
    assert sorted(workers["small"]["queues"]) == ["gpu-16", "gpu-24"]
    assert sorted(workers["big"]["queues"]) == ["gpu-16", "gpu-24", "gpu-48", "gpu-80"]
    assert workers["big"]["accelerator"]["name"] == "H100 80GB HBM3"


def test_a_small_job_goes_to_the_smallest_class_and_trains(two_gpu_workers: Stack) -> None:
    body = job_body(hyperparameters={"max_steps": 3, "batch_size": 2, "seq_len": 128})
    with two_gpu_workers.client() as client:
        created = client.post("/api/v1/jobs", json=body)
    assert created.status_code == 201, created.text
    job = created.json()
    assert job["queue"] == "gpu-16"
    finished = _finished(two_gpu_workers, job["id"])
    assert finished["status"] == "succeeded", finished["error"]


def test_a_job_above_the_small_gpu_waits_for_the_big_one(two_gpu_workers: Stack) -> None:
    # Full fine-tuning would need ~120 GiB (no class served); LoRA on 7B float32 weights lands between
    # (the dataset's rows are short: the plan counts their real tokens, so the base's bytes decide).
    body = job_body(model="llama-2-7b-config",
                    hyperparameters={"max_steps": 2, "batch_size": 4, "seq_len": 2048, "precision": "fp32"})
    with two_gpu_workers.client() as client:
        created = client.post("/api/v1/jobs", json=body)
    assert created.status_code == 201, created.text
    job = created.json()
    peak = job["plan"]["peak_bytes"]
    assert 24 * GIB * 0.9 < peak <= 80 * GIB * 0.9, peak / GIB
    assert job["queue"] == smallest_class_for(peak) in ("gpu-48", "gpu-80")
    finished = _finished(two_gpu_workers, job["id"])
    # Only the 80 GB worker consumes that queue; it took the job (and failed on the missing weights).
    assert finished["worker"].startswith("big@"), finished["worker"]
    assert finished["status"] == "failed"


def test_a_job_no_gpu_class_can_hold_is_refused_naming_the_method(two_gpu_workers: Stack) -> None:
    # fp32 master weights (mixed): 16 bytes a parameter with AdamW, 104 GiB before any activation.
    body = job_body(model="llama-2-7b-config", method="full",
                    hyperparameters={"seq_len": 4096, "batch_size": 16, "precision": "mixed"})
    body["method_config"] = {"optimizer": "adamw"}
    with two_gpu_workers.client() as client:
        before = client.get("/api/v1/jobs").json()["count"]
        response = client.post("/api/v1/jobs", json=body)
        assert client.get("/api/v1/jobs").json()["count"] == before
    assert response.status_code == 422, response.text
    (error,) = response.json()["detail"]
    assert error["loc"] == ["body", "method"]
    assert "does not fit the largest GPU class" in error["msg"]


def test_an_unset_precision_is_stored_as_the_bf16_the_gpu_plan_priced(two_gpu_workers: Stack) -> None:
    body = job_body(model="llama-2-7b-config", hyperparameters={"max_steps": 2, "batch_size": 1, "seq_len": 512})
    with two_gpu_workers.client() as client:
        created = client.post("/api/v1/jobs", json=body)
        assert created.status_code == 201, created.text
        job = created.json()
        client.post(f"/api/v1/jobs/{job['id']}/cancel")
    assert job["plan"]["precision"] == "bf16"
    assert job["hyperparameters"]["precision"] == "bf16"
