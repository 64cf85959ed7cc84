"""Optimiser memory: states that live across steps, and what `step()` allocates on top.

Why per tensor: each optimiser decides per parameter tensor. bitsandbytes
keeps 32-bit states for tensors under 4096 elements and pages (to CUDA
managed memory, outside the torch counters) only those of at least 1e5;
Adafactor factors matrices into a row and a column vector; GaLore keeps
Adam states of the projected gradient plus the projector; foreach AdamW
allocates one temporary per state for a whole parameter group at once.
Figures: ESTIMATOR.md F3, checked against the traced step.
"""
from __future__ import annotations

from dataclasses import dataclass
from math import ceil

from app.planner.params import TensorSpec

BNB_MIN_8BIT = 4096  # bitsandbytes min_8bit_size
BNB_BLOCK = 256  # blockwise 8-bit: one fp32 absmax per 256 elements, per state
PAGED_MIN = 100_000  # bitsandbytes pages tensors of at least 1e5 elements
FP32 = 4


@dataclass(frozen=True)
class OptimizerMemory:
    states: int  # on the device, alive from the first step on
    paged: int  # in managed memory (evictable to the host): not in the device peak
    step_temporaries: int  # extra during optimizer.step()


def _adamw_8bit_state(numel: int) -> int:
    if numel < BNB_MIN_8BIT:
        return 2 * FP32 * numel
    return 2 * numel + 2 * FP32 * ceil(numel / BNB_BLOCK)


def _adafactor_state(spec: TensorSpec) -> int:
    """Factored second moment (rows + columns) for matrices, full for vectors; fp32 (grads are upcast)."""
    if len(spec.shape) >= 2:
        return FP32 * (spec.numel // spec.shape[-1] + spec.numel // spec.shape[-2])
    return FP32 * spec.numel


def optimizer_memory(name: str, tensors: list[TensorSpec], dtype_bytes: int,
                     galore: dict[str, int] | None = None) -> OptimizerMemory:
    """States and step temporaries of optimiser `name` over `tensors` (all of one dtype).

    `galore`, when given, maps projected tensor names to their rank: those get
    GaLore's low-rank states instead.
    """
    galore = galore or {}
    states = paged = 0
    largest = max((t.numel for t in tensors), default=0)
    group_2d = sum(t.total for t in tensors if len(t.shape) >= 2)
    group_1d = sum(t.total for t in tensors if len(t.shape) < 2)
    temporaries = 0
    for t in tensors:
        if t.name in galore and len(t.shape) == 2:
            rank = galore[t.name]
            big, small = max(t.shape), min(t.shape)
            states += t.count * dtype_bytes * (rank * small + 2 * rank * big)
            continue
        if name in {"adamw_8bit", "paged_adamw_8bit"}:
            each = _adamw_8bit_state(t.numel)
            if name == "paged_adamw_8bit" and t.numel >= PAGED_MIN:
                paged += each * t.count
            else:
                states += each * t.count
        elif name == "sgd":
            states += dtype_bytes * t.total  # momentum buffer
        elif name == "adafactor":
            states += _adafactor_state(t) * t.count
        else:
            states += 2 * dtype_bytes * t.total
    if galore:
        temporaries = max(_galore_step_temporaries(t, galore.get(t.name), dtype_bytes) for t in tensors)
    elif name == "adamw":
        temporaries = dtype_bytes * max(group_2d, group_1d)  # foreach: sqrt(exp_avg_sq) for a whole group
    elif name == "adafactor":
        upcast = 2 * FP32 if dtype_bytes < FP32 else 0  # fp32 copies of a low-precision grad and param
        temporaries = (2 * FP32 + upcast) * largest  # the update and its factored approximation, per tensor
    return OptimizerMemory(states=states, paged=paged, step_temporaries=temporaries)


def _galore_step_temporaries(t: TensorSpec, rank: int | None, dtype_bytes: int) -> int:
    """GaLore's AdamW steps one tensor at a time (galore_torch/adamw.py).

    Unprojected: sqrt(v) and m / sqrt(v). Projected: on a projector update an
    SVD of the fp32 gradient (U and Vh, full_matrices=False); otherwise the
    low-rank update and its projection back to full size.
    """
    if rank is None or len(t.shape) != 2:
        return 2 * dtype_bytes * t.numel
    m, n = t.shape
    k = min(m, n)
    upcast = FP32 * m * n if dtype_bytes < FP32 else 0
    svd = upcast + FP32 * (m * k + k * n + k)
    back = 3 * dtype_bytes * rank * max(m, n) + dtype_bytes * m * n
    return max(svd, back)
