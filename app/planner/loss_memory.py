"""The loss's memory: the worker's chunked targets-only loss, or the full logits (ESTIMATOR.md F6).

Apart from `memory` because the loss is its own phase-shaped story: which
path the worker takes (`worker.train.loss._parts`), and what each path
holds at its worst (see `targets_only_loss_bytes`).
"""
from __future__ import annotations

from app.planner.activations import FP32, IDS, MASK, Numerics
from app.planner.architecture import Architecture
from app.planner.setup import TrainingSetup

LOSS_BWD = 12  # bytes per logit at the start of the backward: fp32 log-probs, their gradient and its input
CHUNK = 1024  # positions per output-layer chunk: worker.train.loss.CHUNK (app/ may not import worker/;
# tests/test_planner_memory.py checks the two agree)
GEMMA2_SOFTCAP = 30.0  # transformers' default final_logit_softcapping for gemma2 when config.json omits it


def targets_only_loss(arch: Architecture, setup: TrainingSetup) -> bool:
    """Does the worker's loss take its chunked, targets-only path (`worker.train.loss._parts`)?

    Not for prompt and prefix tuning (their virtual tokens enter through
    peft's forward) nor a soft-capped or scaled output layer: those compute
    the full logits.
    """
    if setup.spec.virtual_tokens is not None or setup.objective != "sft":  # DPO sums full log-softmaxes
        return False
    config = arch.config
    softcap = config.get("final_logit_softcapping", GEMMA2_SOFTCAP if arch.family == "gemma2" else None)
    return not softcap and config.get("logit_scale") in (None, 1, 1.0)


def loss_rows(setup: TrainingSetup) -> int:
    """Positions with a target in the planner's worst-case micro-batch: all but each row's first."""
    return setup.batch_size * (setup.seq_len - 1)


def targets_only_loss_bytes(arch: Architecture, setup: TrainingSetup, num: Numerics, grad_out: bool, needs_w: bool,
                            weight_bytes: int) -> tuple[float, float]:
    """(at its worst in the forward, at the start of the backward) bytes of the chunked loss.

    Forward, alive together: the picked hidden states (rows × h) and targets,
    the input gradient it fills (rows × h) and, when the output layer trains,
    its fp32 weight gradient (V × h); then, one chunk at a time, the worst of
    making the logits (the matmul's output and its fp32 copy; under autocast
    the bf16 weight cast; logsumexp runs in place) and of making their gradient (fp32 softmax in place,
    its cast to the hidden dtype, the fp32 copies the weight gradient's addmm
    takes). Backward: the saved gradients and their scaled copies (the
    weight's cast back to its dtype).
    """
    V, h = arch.vocab_size, arch.hidden_size
    rows = loss_rows(setup)
    chunk = min(CHUNK, rows)
    hb, lb = num.resid, num.head  # hidden states and the output layer's matmul output
    wb = FP32 if setup.spec.quantized_base else weight_bytes  # the output weight
    autocast = num.autocast or num.autocast_peft
    grad_h = rows * h * hb if grad_out else 0
    grad_w = FP32 * V * h if needs_w else 0
    kept = rows * h * hb + rows * IDS + rows * MASK + grad_h + grad_w
    if autocast and needs_w:
        kept += 2 * V * h  # autocast caches its bf16 cast of a trainable weight for the whole region
    make = max(chunk * V * lb + (2 * V * h if autocast else 0), chunk * V * (lb + FP32) if lb < FP32 else 0)
    grads = 0.0
    if grad_out or needs_w:
        grads = chunk * V * FP32 + (chunk * V * hb if hb < FP32 else 0)
        # The input gradient's matmul writes into its slice (`out=`: autocast leaves it alone); the weight
        # gradient's addmm takes fp32 copies of the chunk's gradient and hidden states.
        grads += (FP32 * chunk * V + FP32 * chunk * h) if needs_w and hb < FP32 else 0
    forward = kept + max(make, grads)
    backward = rows * MASK + 2 * grad_h + 2 * grad_w + (wb * V * h if needs_w and wb < FP32 else 0)
    return forward, backward
