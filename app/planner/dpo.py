"""DPO rows of a plan: what the preference objective adds to a method's step (worker/train/dpo.py).

A DPO micro-batch of b pairs is 2·b sequences (each pair's chosen and rejected answer) through one
forward and backward, with the full log-softmax of every position (the summed log-probabilities need
it, not the chunked targets-only loss). Before it, the reference forward over the same 2·b sequences
runs without gradients: FLOPs of a forward, and at its peak the reference logits and their fp32
log-softmax (nothing of the policy is kept yet). For full and freeze the reference is a frozen copy of
the base, resident for the whole run; for LoRA-family adapters it is the same model with the adapter
switched off, costing nothing.
"""
from __future__ import annotations

import dataclasses

from typing import TYPE_CHECKING

from app.planner.architecture import Architecture
from app.planner.setup import TrainingSetup

if TYPE_CHECKING:
    from app.planner.memory import MemoryEstimate

FP32 = 4


def pairs_setup(setup: TrainingSetup) -> TrainingSetup:
    """The policy's side of a DPO step: 2·b sequences, planned as one batch with full logits."""
    return dataclasses.replace(setup, batch_size=2 * setup.batch_size, objective="dpo_pairs")


def reference_weight_bytes(arch: Architecture, setup: TrainingSetup, param_bytes: int, total_params: int) -> int:
    """The frozen reference copy of full and freeze (its weights only: no gradient, no state)."""
    return param_bytes * total_params if setup.spec.dpo_reference == "frozen_copy" else 0


def reference_forward_bytes(arch: Architecture, pairs: TrainingSetup, logits_bytes: int) -> int:
    """The reference forward's worst moment: its logits over the 2·b sequences and their fp32 log-softmax."""
    positions = pairs.batch_size * pairs.seq_len
    return int((logits_bytes + FP32) * positions * arch.vocab_size)


def with_reference(arch: Architecture, setup: TrainingSetup, policy: "MemoryEstimate", logits_bytes: int,
                   param_bytes: int) -> "MemoryEstimate":
    """The policy's phases with the frozen copy added to each, and the reference forward as a phase of its own
    (before the policy's forward: the weights, optimiser states and, accumulating, gradients beside it)."""
    from app.planner.memory import MemoryEstimate

    ref = reference_weight_bytes(arch, setup, param_bytes, policy.total_params)
    phases = {name: total + ref for name, total in policy.phases.items()}
    reference = {"weights": policy.breakdown.get("weights", 0) + ref,
                 **{key: policy.breakdown.get(key, 0) for key in ("trainable_weights", "optimizer", "gradients")},
                 "logits": reference_forward_bytes(arch, pairs_setup(setup), logits_bytes)}
    phases["reference_forward"] = sum(reference.values())
    peak_phase = max(phases, key=lambda k: phases[k])
    if peak_phase == "reference_forward":
        breakdown = reference
    else:
        breakdown = {**policy.breakdown, "weights": policy.breakdown.get("weights", 0) + ref}
    notes = [*policy.notes, f"dpo: {2 * setup.batch_size} sequences per micro-batch (each pair's two answers), "
                            "a reference forward without gradients"
             + (f", a frozen reference copy ({ref / 2**30:.2f} GiB)" if ref else ", the adapter switched off as "
                                                                           "the reference (no copy)")]
    return MemoryEstimate(peak=phases[peak_phase], phase=peak_phase, breakdown=breakdown, phases=phases,
                          paged=policy.paged, trainable_params=policy.trainable_params,
                          total_params=policy.total_params, notes=notes, saved_activations=policy.saved_activations)
