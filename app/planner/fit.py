""""Make it fit": the largest micro-batch, and the cheapest checkpointing/accumulation that fits a GPU.

Why this search: the tokens per optimizer step (micro-batch × accumulation ×
sequence length) set what the user trains, so they are kept; how they are
split decides memory and time. Accumulation costs no FLOPs; checkpointing
costs a recomputed forward (about a third more), so it is used only when no
split fits without it. Memory grows with the micro-batch, so the largest
that fits is found by bisection on the closed form (each probe: ~1 ms).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from app.planner.architecture import Architecture
from app.planner.catalog import GpuSpec, Runtime
from app.planner.compute import cost_for, flops_per_step, seconds_for
from app.planner.estimate import runtime_overhead
from app.planner.memory import estimate_memory
from app.planner.setup import TrainingSetup

MAX_MICRO_BATCH = 1024


@dataclass(frozen=True)
class FitResult:
    fits: bool
    batch_size: int
    gradient_accumulation: int
    gradient_checkpointing: bool
    max_batch_size: int  # the largest micro-batch that fits with this checkpointing choice (0: none)
    peak_bytes: int
    seconds_per_step: float
    cost_per_step: float
    reason: str = ""

    def public(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _peak(arch: Architecture, setup: TrainingSetup, runtime: Runtime) -> int:
    tensors = estimate_memory(arch, setup).peak
    return tensors + runtime_overhead(tensors, runtime)


def largest_micro_batch(arch: Architecture, setup: TrainingSetup, gpu: GpuSpec, runtime: Runtime,
                        limit: int = MAX_MICRO_BATCH) -> int:
    """The largest micro-batch (<= limit) whose peak fits `gpu` with the safety margin; 0 if even 1 does not."""
    budget = gpu.memory_bytes * (1 - runtime.fit_margin)

    def fits(batch: int) -> bool:
        return _peak(arch, dataclasses.replace(setup, batch_size=batch), runtime) <= budget

    if not fits(1):
        return 0
    low, high = 1, limit
    if fits(high):
        return high
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if fits(mid) else (low, mid)
    return low


def make_it_fit(arch: Architecture, setup: TrainingSetup, gpu: GpuSpec, runtime: Runtime) -> FitResult:
    """Keep batch_size × gradient_accumulation (sequences per step); choose the split and checkpointing."""
    target = setup.batch_size * setup.gradient_accumulation
    can_checkpoint = setup.spec.checkpointing  # prefix tuning cannot
    choices = [False, True] if can_checkpoint else [False]
    best: FitResult | None = None
    for gc in choices:
        trial = dataclasses.replace(setup, gradient_checkpointing=gc)
        largest = largest_micro_batch(arch, trial, gpu, runtime)
        if largest == 0:
            continue
        micro = min(largest, target)
        accumulation = math.ceil(target / micro)
        chosen = dataclasses.replace(trial, batch_size=micro, gradient_accumulation=accumulation)
        seconds = seconds_for(flops_per_step(arch, chosen), gpu.bf16_tflops, gpu.utilisation.get(setup.method, 0.3))
        result = FitResult(True, micro, accumulation, gc, largest, _peak(arch, chosen, runtime), round(seconds, 4),
                           round(cost_for(seconds, gpu.price_per_hour), 6))
        if best is None or result.seconds_per_step < best.seconds_per_step:
            best = result
    if best is not None:
        return best
    peak = _peak(arch, dataclasses.replace(setup, batch_size=1, gradient_accumulation=target,
                                           gradient_checkpointing=can_checkpoint), runtime)
    return FitResult(False, 1, target, can_checkpoint, 0, peak, 0.0, 0.0,
                     reason=f"{setup.method} needs {peak / 2**30:.1f} GiB at micro-batch 1 with checkpointing; "
                            f"{gpu.name} has {gpu.memory_bytes / 2**30:.1f} GiB "
                            "(try qlora, a shorter seq_len or a larger GPU)")
