"""Issue 4, acceptance 2: the traced peak of a demo-model step is within ±5% of the peak the PyTorch
profiler measures while really training that step on the CPU (benchmarks/plan_measured.py prints
the figures; this keeps them honest in `make test`). QLoRA is left out: its 4-bit layers are emulated
in the trace. Issue 14, acceptance 2: the instant plan made on a dataset's real rows against the
trainer's widest micro-batch of that dataset, really trained."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.planner.setup import TrainingSetup
from benchmarks.plan_measured import METHODS, measure

pytestmark = pytest.mark.unit


TOLERANCE = 0.05


@pytest.mark.parametrize("method", METHODS)
def test_traced_peak_matches_the_profiler_measured_step(method: str) -> None:
    traced, measured = measure(method)
    assert measured > 0
    assert abs(traced - measured) <= TOLERANCE * measured, (method, traced, measured)


def _mixed_rows(count: int) -> list[dict[str, str]]:
    """Short and long answers (2 to ~400 bytes): the long tail that sets a real dataset's widest batch."""
    return [{"instruction": f"Repeat the word {i}", "input": "",
             "output": " ".join(["word"] * (1 + (i * 7) % 13 + (40 if i % 11 == 0 else 0)))} for i in range(count)]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_cpu_step_on_a_mixed_length_dataset_measures_within_5_percent_of_its_plan(
        assets: tuple[Path, Path], tmp_path: Path, precision: str) -> None:
    """Issue 14, acceptance 2: planned on the dataset's real rows, the peak is below the plan padded to
    seq_len, and the trainer's widest grouped micro-batch of that dataset, really trained on the CPU
    (fp32: the CPU trainer's default; bf16: hyperparameters.precision), peaks within 5 % of it (PyTorch
    profiler tensor peak). Measured here (widest batch 4 × 317 of seq_len 512): fp32 101.7 MB planned,
    97.3 MB measured (+4.5 %: the instant LoRA activations' own fp32 error at that shape, where the traced
    step equals the measured one), bf16 75.0 / 74.0 MB (+1.3 %); padded to seq_len the plan says 688 / 647 MB."""
    import torch
    from torch.profiler import ProfilerActivity, profile
    from transformers import AutoTokenizer

    from app.planner.catalog import load_catalog
    from app.planner.service import plan
    from app.schemas.plan import PlanRequest
    from benchmarks.plan_measured import measured_peak
    from worker.trace.fakes import _fused_dropout
    from worker.trace.model import DTYPES, apply_method, build_meta_model
    from worker.trace.step import trace_optimizer, training_step, warm_up
    from worker.train.data import BatchStream, load_examples

    model_dir, _ = assets
    dataset = tmp_path / "mixed.jsonl"
    dataset.write_text("".join(json.dumps(r) + "\n" for r in _mixed_rows(64)))
    catalog, seq_len, batch = load_catalog(), 512, 4
    common = {"model": "demo", "methods": ["lora"], "seq_len": seq_len, "batch_size": batch, "precision": precision}
    on_rows = plan(PlanRequest(dataset="mixed", **common), catalog, lambda _id, _arch: dataset)
    padded = plan(PlanRequest(dataset_tokens=on_rows["dataset_tokens"], **common), catalog, lambda _id, _arch: None)
    estimate = on_rows["estimates"][0]
    planned = estimate["peak_bytes"] - estimate["breakdown"]["runtime_overhead"]
    assert estimate["peak_bytes"] < padded["estimates"][0]["peak_bytes"]

    examples, _ = load_examples(dataset, AutoTokenizer.from_pretrained(model_dir), seq_len, "alpaca")
    stream = iter(BatchStream(examples, batch, 42, 0, "grouped"))
    widest = max((next(stream) for _ in range(len(examples) // batch)), key=lambda b: b.input_ids.shape[1])
    assert widest.input_ids.shape[1] == on_rows["dataset_lengths"]["peak_width"]
    setup = TrainingSetup.build("lora", {}, seq_len=seq_len, batch_size=batch, precision=precision)
    arch = catalog.architecture("demo")
    torch.manual_seed(0)
    model = apply_method(build_meta_model(arch, DTYPES[precision], device="cpu"), arch, setup, DTYPES[precision])
    model.train()
    with _fused_dropout():
        opt, params = trace_optimizer(model, setup)
        warm_up(opt, params, setup)
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True) as prof:
            training_step(model, opt, params, widest, False)
    measured = measured_peak(prof)
    assert abs(planned - measured) <= TOLERANCE * measured, (planned, measured)
