"""One method's estimate in the answer shape the API returns, for a list of GPUs.

Why a separate module: the instant and the traced estimator differ only in
where the tensor peak and the FLOPs come from; the runtime overhead, the fit
test against each GPU, time, cost and the notes are the same code, so the two
answers can be compared line for line.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from app.planner.architecture import Architecture
from app.planner.caveats import not_applied, precision_recipe
from app.planner.catalog import GpuSpec, Runtime
from app.planner.compute import cost_for, flops_per_step, seconds_for
from app.planner.memory import MemoryEstimate, estimate_memory
from app.planner.moe import moe_note
from app.planner.setup import TrainingSetup

BREAKDOWN_KEYS = ("weights", "trainable_weights", "gradients", "optimizer", "activations", "logits")


@dataclass(frozen=True)
class RunLength:
    """How much data the job sees: tokens per epoch and epochs (None: price one step).

    With a stored dataset the steps are the trainer's own count (`trainer_steps`, from its rows after
    the cut and the held-out split: app.planner.real_data); from a token count alone they are
    tokens ÷ (micro-batch × seq_len × accumulation), every sequence taken as full."""

    dataset_tokens: int | None = None
    epochs: float = 1.0
    trainer_steps: int | None = None

    def steps(self, setup: TrainingSetup) -> int | None:
        if self.trainer_steps is not None:
            return self.trainer_steps
        if not self.dataset_tokens:
            return None
        per_step = setup.batch_size * setup.seq_len * setup.gradient_accumulation
        return max(1, math.ceil(self.dataset_tokens * self.epochs / per_step))


def runtime_overhead(tensor_peak: int, runtime: Runtime, tensor_ratio: float | None = None) -> int:
    """CUDA context and workspaces, plus the allocator's slack over the tensor peak.

    A GPU calibrated from its measured runs (`GpuCalibration.tensor_ratio`: measured allocated peak
    over the predicted tensor peak) first scales the tensors by that ratio: what the runs allocated
    beyond the plan (kernel workspaces, library buffers) is overhead too."""
    scale = tensor_ratio if tensor_ratio is not None else 1.0
    return int(runtime.cuda_context_bytes + ((1 + runtime.allocator_slack) * scale - 1) * tensor_peak)


def calibrated_peak(peak: int, runtime: Runtime, gpu: GpuSpec) -> int:
    """The device peak on this GPU: `peak` (tensors + uncalibrated overhead) with its calibrated overhead.

    peak = context + (1 + slack)·tensors, so the tensors are recovered exactly from it; that keeps
    one signature for the instant, the traced and the real-data paths, which all pass the peak."""
    calibration = gpu.calibration
    if calibration is None or calibration.tensor_ratio is None:
        return peak
    tensors = max(0.0, (peak - runtime.cuda_context_bytes) / (1 + runtime.allocator_slack))
    return int(tensors + runtime_overhead(int(tensors), runtime, calibration.tensor_ratio))


def gpu_rows(method: str, peak: int, step_flops: float, steps: int | None, gpus: list[GpuSpec],
             runtime: Runtime) -> list[dict[str, Any]]:
    rows = []
    for gpu in gpus:
        seconds = seconds_for(step_flops * (steps or 1), gpu.bf16_tflops, gpu.utilisation_for(method))
        gpu_peak = calibrated_peak(peak, runtime, gpu)
        row: dict[str, Any] = {
            "name": gpu.name,
            "fits": gpu_peak <= gpu.memory_bytes * (1 - runtime.fit_margin),
            "headroom_bytes": gpu.memory_bytes - gpu_peak,
            "seconds": round(seconds, 3),
            "cost": round(cost_for(seconds, gpu.price_per_hour), 4),
        }
        note = gpu.calibration.note(gpu.name, method) if gpu.calibration is not None else None
        if note:
            row["calibrated"] = note
        rows.append(row)
    return rows


def calibration_notes(method: str, gpus: list[GpuSpec]) -> list[str]:
    """Say which GPU figures come from measured runs, and from how many."""
    notes = [gpu.calibration.note(gpu.name, method) for gpu in gpus if gpu.calibration is not None]
    return [note for note in notes if note]


def method_notes(arch: Architecture, setup: TrainingSetup, memory: MemoryEstimate, steps: int | None) -> list[str]:
    notes = list(memory.notes)
    spec = setup.spec
    if setup.gradient_checkpointing and not spec.checkpointing:
        notes.append(f"{spec.label.lower()} cannot use gradient checkpointing: estimated without it "
                     f"({spec.no_checkpointing})")
    if spec.quantized_base:
        from app.planner.setup import qlora_note  # the QLoRA line (its owner: app/planner/setup.py)
        notes.append(qlora_note(setup))
    if spec.peft:
        notes.append("peft keeps adapter weights, gradients and optimiser states in fp32")
    if arch.moe is not None:
        notes.append(moe_note(arch.moe, spec.lora, spec.low_rank_gradients, spec.quantized_base))
    if arch.family == "gemma2":
        notes.append("attention memory as with flash-attention 2 (softcapping in-kernel); eager attention "
                     "would add a·s² per layer")
    if steps is None:
        notes.append("seconds and cost are for one optimizer step: give dataset_tokens or dataset for the whole run")
    else:
        notes.append(f"{steps} optimizer steps")
    return notes


def assemble(method: str, memory: MemoryEstimate, flops: float, steps: int | None, gpus: list[GpuSpec],
             runtime: Runtime, notes: list[str]) -> dict[str, Any]:
    """The answer for one method, from a tensor peak (instant or traced) and FLOPs per step."""
    overhead = runtime_overhead(memory.peak, runtime)
    peak = memory.peak + overhead
    breakdown = {key: int(memory.breakdown.get(key, 0)) for key in BREAKDOWN_KEYS}
    breakdown["runtime_overhead"] = overhead
    return {
        "method": method,
        "peak_bytes": peak,
        "breakdown": breakdown,
        "peak_phase": memory.phase,
        "trainable_params": memory.trainable_params,
        "total_params": memory.total_params,
        "flops_per_step": int(flops),
        "steps": steps,
        "gpus": gpu_rows(method, peak, flops, steps, gpus, runtime),
        "notes": notes + calibration_notes(method, gpus),
    }


def instant_estimate(arch: Architecture, setup: TrainingSetup, gpus: list[GpuSpec], runtime: Runtime,
                     run: RunLength) -> dict[str, Any]:
    """The closed-form estimate of one method (milliseconds)."""
    memory = estimate_memory(arch, setup)
    steps = run.steps(setup)
    flops = flops_per_step(arch, setup)
    estimate = assemble(setup.method, memory, flops, steps, gpus, runtime, method_notes(arch, setup, memory, steps))
    estimate.update(not_applied=not_applied(setup), recipe=precision_recipe(setup))
    return estimate


def badges(estimates: list[dict[str, Any]]) -> dict[str, Any]:
    """The cheapest and the fastest (method, GPU) that fit, among the methods that honoured every setting.

    Like with like: a row estimated without something the request asked for (prefix tuning
    without the asked-for checkpointing, so without its recomputation) would win on a different
    question, so it is listed under `not_ranked` with why. When no method honoured everything,
    all are ranked (each row says what it assumed).
    """
    honoured = [e for e in estimates if not e.get("not_applied")]
    ranked = honoured or estimates
    not_ranked = [{"method": e["method"], "why": "; ".join(e["not_applied"])}
                  for e in estimates if honoured and e.get("not_applied")]
    fitting = [(e["method"], g) for e in ranked for g in e["gpus"] if g["fits"]]
    if not fitting:
        return {"cheapest": None, "fastest": None, "not_ranked": not_ranked}
    cheapest = min(fitting, key=lambda mg: (mg[1]["cost"], mg[1]["seconds"]))
    fastest = min(fitting, key=lambda mg: (mg[1]["seconds"], mg[1]["cost"]))
    return {"cheapest": {"method": cheapest[0], "gpu": cheapest[1]["name"]},
            "fastest": {"method": fastest[0], "gpu": fastest[1]["name"]}, "not_ranked": not_ranked}
