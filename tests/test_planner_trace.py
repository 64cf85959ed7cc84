"""The traced estimator on the demo model: fake tensors, real transformers/peft/optimiser code.

A few seconds in all: the demo model traces in well under a second per method.
"""
from __future__ import annotations

import json
import warnings

import pytest

torch = pytest.importorskip("torch")

from app.planner.architecture import Architecture  # noqa: E402
from app.planner.catalog import load_catalog  # noqa: E402
from app.planner.compute import flops_per_micro_batch  # noqa: E402
from app.planner.memory import estimate_memory  # noqa: E402
from app.planner.params import trainable_count  # noqa: E402
from app.planner.setup import TrainingSetup  # noqa: E402
from worker.trace import trace_step  # noqa: E402
from tests.helpers.demo_config import DEMO  # noqa: E402

pytestmark = pytest.mark.unit


warnings.filterwarnings("ignore", category=FutureWarning)


@pytest.mark.parametrize("method", ["full", "freeze", "lora", "dora", "qlora", "galore", "adapters", "prefix", "prompt"])
@pytest.mark.parametrize("checkpointing", [False, True])
def test_instant_matches_traced_on_the_demo_model(method: str, checkpointing: bool) -> None:
    """±5% here; the acceptance grid (benchmarks/plan_accuracy.py, real models) holds ±3%. The demo's
    259-token vocabulary makes the fitted per-layer backward temporaries, not the logits, set its peak."""
    arch = load_catalog().architecture("demo")
    setup = TrainingSetup.build(method, {}, seq_len=128, batch_size=2, gradient_checkpointing=checkpointing)
    traced = trace_step(arch, setup)
    instant = estimate_memory(arch, setup)
    assert abs(instant.peak - traced.peak_bytes) <= 0.05 * traced.peak_bytes
    assert instant.trainable_params == traced.trainable_params
    assert traced.total_params == instant.total_params == 3_034_880


def test_lora_on_q_and_v_trains_what_peft_trains() -> None:
    arch = Architecture.from_config(DEMO)
    setup = TrainingSetup.build("lora", {"r": 8, "target_modules": "minimal"}, seq_len=64)
    assert trace_step(arch, setup).trainable_params == trainable_count(arch, setup) == 28_672


def test_tied_embeddings_stay_tied_in_the_trace() -> None:
    tied = Architecture.from_config({**DEMO, "tie_word_embeddings": True})
    untied = Architecture.from_config(DEMO)
    setup = TrainingSetup.build("full", {}, seq_len=64)
    t, u = trace_step(tied, setup), trace_step(untied, setup)
    assert u.total_params - t.total_params == 259 * 256  # one embedding matrix, not two
    assert t.breakdown["trainable_weights"] == 2 * t.total_params  # bf16, counted once


def test_traced_flops_match_the_closed_form() -> None:
    arch = load_catalog().architecture("demo")
    for method in ("full", "lora", "prefix"):
        setup = TrainingSetup.build(method, {}, seq_len=128, batch_size=2)
        traced = trace_step(arch, setup).flops_per_micro_batch
        assert abs(flops_per_micro_batch(arch, setup) - traced) <= 0.01 * traced


def test_checkpointed_trace_frees_each_layer_after_its_backward() -> None:
    """A stacked FlopCounterMode's module hooks once kept recomputed layers alive; GC must save memory."""
    arch = load_catalog().architecture("qwen2.5-0.5b")
    plain = trace_step(arch, TrainingSetup.build("lora", {}, seq_len=512, batch_size=2))
    checkpointed = trace_step(arch, TrainingSetup.build("lora", {}, seq_len=512, batch_size=2,
                                                        gradient_checkpointing=True))
    assert checkpointed.marks["forward_end"] - checkpointed.marks["static"] < \
        0.5 * (plain.marks["forward_end"] - plain.marks["static"])


def test_paged_states_are_counted_apart() -> None:
    arch = load_catalog().architecture("demo")
    traced = trace_step(arch, TrainingSetup.build("qlora", {"target_modules": "all-linear"}, seq_len=64))
    assert traced.paged_bytes == 0  # demo adapters are all under 1e5 elements: bitsandbytes pages none
    arch = load_catalog().architecture("qwen2.5-0.5b")
    traced = trace_step(arch, TrainingSetup.build("full", {}, optimizer="paged_adamw_8bit", seq_len=64))
    instant = estimate_memory(arch, TrainingSetup.build("full", {}, optimizer="paged_adamw_8bit", seq_len=64))
    assert traced.paged_bytes > 0 and abs(traced.paged_bytes - instant.paged) <= 0.01 * instant.paged


def test_plan_task_stores_a_traced_answer() -> None:
    from worker.plan_task import run_plan_trace

    class Store(dict):
        def set(self, key: str, value: str, ex: int | None = None) -> None:
            self[key] = value

    store = Store()
    run_plan_trace("k", {"model": "demo", "methods": ["lora", "prompt"], "seq_len": 64, "gpus": ["L4"]}, store,
                   load_catalog())
    answer = json.loads(store["k"])
    assert [e["method"] for e in answer["estimates"]] == ["lora", "prompt"]
    assert all(e["mode"] == "traced" and e["gpus"][0]["fits"] for e in answer["estimates"])
    run_plan_trace("bad", {"model": "demo", "methods": ["freeze"], "seq_len": 64,
                           "method_config": {"freeze": {"trainable_layers": 9}}}, store, load_catalog())
    assert "trainable_layers" in json.loads(store["bad"])["error"]


def test_the_planner_chunks_the_loss_as_the_worker_does() -> None:
    """app/planner may not import worker/, so it keeps its own copy of the loss's chunk size."""
    from app.planner.loss_memory import CHUNK
    from worker.train.loss import CHUNK as WORKER_CHUNK

    assert CHUNK == WORKER_CHUNK


@pytest.mark.parametrize("method", ["full", "freeze", "lora", "qlora", "prompt"])
def test_instant_matches_traced_with_a_real_vocabulary(method: str) -> None:
    """On the demo the loss is negligible; with Qwen2.5's 151k vocabulary and more target rows than one
    CHUNK, the chunked loss (or prompt tuning's full logits) decides the peak, and must still agree."""
    arch = load_catalog().architecture("qwen2.5-0.5b")
    setup = TrainingSetup.build(method, {}, seq_len=640, batch_size=2)
    traced = trace_step(arch, setup)
    instant = estimate_memory(arch, setup)
    assert abs(instant.peak - traced.peak_bytes) <= 0.03 * traced.peak_bytes, (instant.phase, traced.peak_phase)
    assert abs(instant.phases["forward"] - traced.phase_peaks["forward"]) <= 0.03 * traced.phase_peaks["forward"]


def test_the_trace_runs_the_workers_chunked_loss() -> None:
    """The traced step holds about one chunk of fp32 logits, not the whole batch's: 8 × 640 positions,
    5110 target rows, five chunks (the whole batch's fp32 logits alone would be five chunk-sized tensors)."""
    from worker.train.loss import CHUNK

    arch = load_catalog().architecture("qwen2.5-0.5b")
    traced = trace_step(arch, TrainingSetup.build("lora", {}, seq_len=640, batch_size=8))
    chunk_logits = 4 * CHUNK * arch.vocab_size
    assert traced.peak_phase == "forward"
    assert chunk_logits <= traced.breakdown["logits"] < 2 * chunk_logits
