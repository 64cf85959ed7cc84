""""Make it fit": the same training step split, checkpointed or stepped so that it fits one GPU.

Why this search: the sequences per optimizer step (micro-batch × accumulation)
set what the user trains, so they are kept exactly: the micro-batch is a
divisor of them, never rounded up. What may change, cheapest first by the time
it costs: the split (accumulation costs no FLOPs), an 8-bit or paged AdamW the
method's job offers (its states shrink ~4x; no FLOPs), then gradient
checkpointing (a recomputed forward, about a third more). A shorter seq_len
changes what trains, so it is tried only when asked and only when nothing
else fits. When nothing fits, the answer says by how many GiB the leanest
configuration misses, what it was, and what would fit instead: other
methods (never the one chosen) and larger GPUs. Memory grows with the
micro-batch, so the largest that fits is found by bisection on the closed
form (each probe: ~1 ms).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from app.planner.architecture import Architecture
from app.planner.catalog import Catalog, GpuSpec, Runtime
from app.planner.caveats import OPTIMIZER_LABELS, job_optimizers
from app.planner.compute import cost_for, flops_per_step, seconds_for
from app.planner.estimate import calibrated_peak, runtime_overhead
from app.planner.memory import estimate_memory
from app.planner.setup import TrainingSetup

if TYPE_CHECKING:
    from app.schemas.plan import FitRequest

MAX_MICRO_BATCH = 1024
LEAN_OPTIMIZERS = ("adamw_8bit", "paged_adamw_8bit")  # the same update as AdamW, with ~4x smaller states
SEQ_STEP = 64  # shorter sequences are tried in steps of 64 tokens


@dataclass(frozen=True)
class FitResult:
    fits: bool
    batch_size: int
    gradient_accumulation: int
    gradient_checkpointing: bool
    optimizer: str
    seq_len: int
    max_batch_size: int  # the largest micro-batch that fits with this choice, at any accumulation (0: none)
    peak_bytes: int
    usable_bytes: int  # the GPU's memory less the fit margin
    over_bytes: int  # how far the leanest configuration misses (0 when it fits)
    seconds_per_step: float
    cost_per_step: float
    changes: list[str] = field(default_factory=list)
    reason: str = ""

    def public(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _peak(arch: Architecture, setup: TrainingSetup, runtime: Runtime, gpu: GpuSpec) -> int:
    """The device peak on `gpu`, with its calibrated overhead where measured runs set one (as the plan's row)."""
    tensors = estimate_memory(arch, setup).peak
    return calibrated_peak(tensors + runtime_overhead(tensors, runtime), runtime, gpu)


def usable_bytes(gpu: GpuSpec, runtime: Runtime) -> int:
    return int(gpu.memory_bytes * (1 - runtime.fit_margin))


def largest_micro_batch(arch: Architecture, setup: TrainingSetup, gpu: GpuSpec, runtime: Runtime,
                        limit: int = MAX_MICRO_BATCH) -> int:
    """The largest micro-batch (<= limit) whose peak fits `gpu` with the safety margin; 0 if even 1 does not."""
    budget = usable_bytes(gpu, runtime)

    def fits(batch: int) -> bool:
        return _peak(arch, dataclasses.replace(setup, batch_size=batch), runtime, gpu) <= budget

    if not fits(1):
        return 0
    low, high = 1, limit
    if fits(high):
        return high
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if fits(mid) else (low, mid)
    return low


def _largest_divisor_that_fits(arch: Architecture, setup: TrainingSetup, gpu: GpuSpec, runtime: Runtime,
                               target: int, limit: int) -> int:
    """The largest divisor d <= limit of `target` that fits at micro-batch d × accumulation target/d; 0: none.

    Each is probed with its own accumulation: with more than one micro-batch the gradients
    live through the whole step, so the peak is not the micro-batch's alone."""
    budget = usable_bytes(gpu, runtime)
    for d in sorted((d for d in range(1, min(target, limit) + 1) if target % d == 0), reverse=True):
        split = dataclasses.replace(setup, batch_size=d, gradient_accumulation=target // d)
        if _peak(arch, split, runtime, gpu) <= budget:
            return d
    return 0


def _trials(setup: TrainingSetup) -> list[TrainingSetup]:
    """Checkpointing off/on (where the method can take it) × the user's optimiser, then the lean ones."""
    optimizers = [setup.optimizer] + [o for o in LEAN_OPTIMIZERS
                                      if o in job_optimizers(setup.spec) and o != setup.optimizer]
    checkpointing = [False, True] if setup.spec.checkpointing else [False]
    return [dataclasses.replace(setup, gradient_checkpointing=gc, optimizer=o) for gc in checkpointing
            for o in optimizers]


def _leanest(arch: Architecture, setup: TrainingSetup, target: int, runtime: Runtime, gpu: GpuSpec) -> TrainingSetup:
    """The configuration with the smallest peak: micro-batch 1, checkpointed, the leanest optimiser offered."""
    trials = [dataclasses.replace(t, batch_size=1, gradient_accumulation=target) for t in _trials(setup)]
    return min(trials, key=lambda t: _peak(arch, t, runtime, gpu))


def _changes(before: TrainingSetup, after: TrainingSetup) -> list[str]:
    """What the fitted configuration changed, in the user's words."""
    out = []
    if (before.batch_size, before.gradient_accumulation) != (after.batch_size, after.gradient_accumulation):
        out.append(f"micro-batch {before.batch_size} × accumulation {before.gradient_accumulation} → "
                   f"{after.batch_size} × {after.gradient_accumulation} (the same "
                   f"{after.batch_size * after.gradient_accumulation} sequences per step)")
    if before.gradient_checkpointing != after.gradient_checkpointing:
        out.append(f"gradient checkpointing {'on' if after.gradient_checkpointing else 'off'}")
    if before.optimizer != after.optimizer:
        out.append(f"{OPTIMIZER_LABELS.get(after.optimizer, after.optimizer)} instead of "
                   f"{OPTIMIZER_LABELS.get(before.optimizer, before.optimizer)}")
    if before.seq_len != after.seq_len:
        out.append(f"seq_len {before.seq_len} → {after.seq_len} (longer rows are cut)")
    return out


def _best_split(arch: Architecture, setup: TrainingSetup, gpu: GpuSpec, runtime: Runtime, target: int
                ) -> tuple[TrainingSetup, int] | None:
    """The fastest fitting trial at this seq_len (ties: fewest changes), with its largest micro-batch."""
    best: tuple[float, int, TrainingSetup, int] | None = None
    for rank, trial in enumerate(_trials(setup)):
        # accumulating: gradients live through the step, so this micro-batch fits at any accumulation
        largest = largest_micro_batch(arch, dataclasses.replace(trial, gradient_accumulation=2), gpu, runtime)
        micro = _largest_divisor_that_fits(arch, trial, gpu, runtime, target, max(largest, 1))
        if micro == 0:
            continue
        largest = max(largest, micro)
        chosen = dataclasses.replace(trial, batch_size=micro, gradient_accumulation=target // micro)
        seconds = seconds_for(flops_per_step(arch, chosen), gpu.bf16_tflops, gpu.utilisation_for(setup.method))
        if best is None or (seconds, rank) < (best[0], best[1]):
            best = (seconds, rank, chosen, largest)
    return None if best is None else (best[2], best[3])


def _longest_seq_len(arch: Architecture, setup: TrainingSetup, gpu: GpuSpec, runtime: Runtime, target: int) -> int:
    """The longest seq_len (a multiple of 64, below the asked one) at which the leanest configuration fits; 0: none."""
    budget = usable_bytes(gpu, runtime)

    def fits(seq_len: int) -> bool:
        lean = dataclasses.replace(_leanest(arch, setup, target, runtime, gpu), seq_len=seq_len)
        return _peak(arch, lean, runtime, gpu) <= budget

    step = SEQ_STEP if setup.seq_len > SEQ_STEP else 8
    low, high = 1, (setup.seq_len - 1) // step  # in steps
    if high < 1 or not fits(step):
        return 0
    while high - low > 0:
        mid = (low + high + 1) // 2
        low, high = (mid, high) if fits(mid * step) else (low, mid - 1)
    return low * step


def make_it_fit(arch: Architecture, setup: TrainingSetup, gpu: GpuSpec, runtime: Runtime, *,
                allow_shorter_seq_len: bool = False, others: Sequence[TrainingSetup] = (),
                gpus: Sequence[GpuSpec] = ()) -> FitResult:
    """Keep batch_size × gradient_accumulation exactly; choose the split, the optimiser and checkpointing.

    `others` (the other methods, as asked) and `gpus` (the catalog) only feed the advice
    given when nothing fits."""
    target = setup.batch_size * setup.gradient_accumulation
    found = _best_split(arch, setup, gpu, runtime, target)
    if found is None and allow_shorter_seq_len and (seq_len := _longest_seq_len(arch, setup, gpu, runtime, target)):
        found = _best_split(arch, dataclasses.replace(setup, seq_len=seq_len), gpu, runtime, target)
    if found is not None:
        chosen, largest = found
        seconds = seconds_for(flops_per_step(arch, chosen), gpu.bf16_tflops, gpu.utilisation_for(setup.method))
        return FitResult(True, chosen.batch_size, chosen.gradient_accumulation, chosen.gradient_checkpointing,
                         chosen.optimizer, chosen.seq_len, largest, _peak(arch, chosen, runtime, gpu),
                         usable_bytes(gpu, runtime), 0, round(seconds, 4),
                         round(cost_for(seconds, gpu.price_per_hour), 6), _changes(setup, chosen))
    lean = _leanest(arch, setup, target, runtime, gpu)
    peak = _peak(arch, lean, runtime, gpu)
    usable = usable_bytes(gpu, runtime)
    return FitResult(False, lean.batch_size, lean.gradient_accumulation, lean.gradient_checkpointing, lean.optimizer,
                     lean.seq_len, 0, peak, usable, peak - usable, 0.0, 0.0, _changes(setup, lean),
                     reason=_no_fit_reason(arch, setup, lean, peak, gpu, runtime, others, gpus, allow_shorter_seq_len))


def _no_fit_reason(arch: Architecture, asked: TrainingSetup, lean: TrainingSetup, peak: int, gpu: GpuSpec,
                   runtime: Runtime, others: Sequence[TrainingSetup], gpus: Sequence[GpuSpec],
                   shorter_tried: bool) -> str:
    """How far the leanest configuration misses, what it was, and what would fit instead."""
    usable = usable_bytes(gpu, runtime)
    leanest = (f"micro-batch 1 × accumulation {lean.gradient_accumulation}, gradient checkpointing "
               f"{'on' if lean.gradient_checkpointing else 'off (the method cannot take it)'}, "
               f"{OPTIMIZER_LABELS.get(lean.optimizer, lean.optimizer)}, seq_len {lean.seq_len}")
    parts = [f"{asked.method} does not fit {gpu.name}, even in the best configuration found ({leanest}): it needs "
             f"{peak / 2**30:.1f} GiB, {(peak - usable) / 2**30:.1f} GiB over the {usable / 2**30:.1f} GiB usable "
             f"({gpu.memory_bytes / 2**30:.1f} GiB less the {100 * runtime.fit_margin:.0f}% margin)."]
    target = lean.gradient_accumulation
    fitting = [o.method for o in others if o.method != asked.method
               and _peak(arch, _leanest(arch, o, target, runtime, gpu), runtime, gpu) <= usable]
    parts.append(f"Methods that fit {gpu.name} at these settings: {', '.join(fitting)}." if fitting else
                 f"No other method fits {gpu.name} at these settings either." if others else "")
    larger = sorted((g for g in gpus if usable_bytes(g, runtime) >= _peak(arch, lean, runtime, g)),
                    key=lambda g: (g.memory_bytes, g.price_per_hour))
    if larger:
        parts.append(f"The smallest GPU in the catalog it fits: {larger[0].name} "
                     f"({larger[0].memory_bytes / 2**30:.0f} GiB).")
    elif gpus:
        parts.append("No GPU in the catalog holds it.")
    if not shorter_tried and asked.seq_len > SEQ_STEP:
        parts.append("A shorter seq_len may fit: allow it (allow_shorter_seq_len).")
    return " ".join(p for p in parts if p)


def fit_request(body: "FitRequest", catalog: Catalog) -> FitResult:
    """The API's and the page's "make it fit": the request's method on its GPU (`PlanError`: a 422)."""
    from app.methods import METHODS
    from app.planner.service import PlanError, build_setup, resolve_architecture, resolve_gpus

    arch = resolve_architecture(body, catalog)
    method = body.methods[0]
    setup = build_setup(body, method, arch)
    gpu = resolve_gpus(body, catalog)[0]
    others = []
    for other in METHODS:
        if other != method:
            try:
                others.append(build_setup(body, other, arch))
            except PlanError:
                continue  # an option of the request that method cannot take: it is no alternative
    return make_it_fit(arch, setup, gpu, catalog.runtime, allow_shorter_seq_len=body.allow_shorter_seq_len,
                       others=others, gpus=catalog.gpus())
