"""Traced vs measured: the traced peak of a demo-model step against a real CPU step (issue 4, acceptance 2).

The real step runs the same code as the trace (`training_step`: the
worker's own loss, `worker.train.loss.summed_loss`, on the same worst-case
batch, every position a target; the same optimiser with its states already
made, GPU-like fused dropout), on real tensors, under the PyTorch profiler
with memory records; its peak is the
running sum of the profiler's memory timeline (+size on CREATE and
PREEXISTING, -size on DESTROY), which knows nothing of the tracer's counter.
QLoRA is left out: the trace emulates bitsandbytes' 4-bit layers.

    .venv/bin/python -m benchmarks.plan_measured
"""
from __future__ import annotations

import sys
import warnings

METHODS = ["full", "freeze", "lora", "dora", "galore", "adapters", "prefix", "prompt"]


def measured_peak(prof: object) -> int:
    from torch.profiler._memory_profiler import Action, MemoryProfile

    timeline = MemoryProfile(prof.profiler.kineto_results).timeline  # type: ignore[attr-defined]
    live = peak = 0
    for _time, action, _key, size in timeline:
        if action in (Action.CREATE, Action.PREEXISTING):
            live += size
        elif action == Action.DESTROY:
            live -= size
        peak = max(peak, live)
    return peak


def measure(method: str, seq_len: int = 128, batch_size: int = 4) -> tuple[int, int]:
    """(traced peak, measured peak) of one step of `method` on the demo model."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from app.planner.catalog import load_catalog
    from app.planner.setup import TrainingSetup
    from worker.trace.step import (_fused_dropout, _unpacked_batches, trace_optimizer, trace_step, training_step,
                                   uses_autocast, warm_up, worst_case_batch)
    from worker.trace.model import DTYPES, apply_method, build_meta_model

    arch = load_catalog().architecture("demo")
    setup = TrainingSetup.build(method, {}, seq_len=seq_len, batch_size=batch_size)
    traced = trace_step(arch, setup).peak_bytes
    torch.manual_seed(0)
    dtype = DTYPES[setup.precision]
    model = apply_method(build_meta_model(arch, dtype, device="cpu"), arch, setup, dtype)
    model.train()
    with _fused_dropout(), _unpacked_batches():
        opt, params = trace_optimizer(model, setup)
        warm_up(opt, params, setup)
        batch = worst_case_batch(torch.randint(0, arch.vocab_size, (batch_size, seq_len)))
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True,
                     with_stack=False) as prof:
            training_step(model, opt, params, batch, uses_autocast(setup))
    return traced, measured_peak(prof)


def main() -> None:
    warnings.filterwarnings("ignore")
    worst = 0.0
    print("method     traced MB  measured MB   error")
    for method in METHODS:
        traced, measured = measure(method)
        error = (traced - measured) / measured
        worst = max(worst, abs(error))
        print(f"{method:9s} {traced / 1e6:10.2f} {measured / 1e6:12.2f} {100 * error:+7.2f}%", flush=True)
    print(f"worst |error| {100 * worst:.2f}% (target: within ±5%)")
    sys.exit(0 if worst <= 0.05 else 1)


if __name__ == "__main__":
    main()
