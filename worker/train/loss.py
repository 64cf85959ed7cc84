"""The training objective, shared by the loop (training steps), evaluation and the traced planner.

Kept apart from the loop so that evaluation measures held-out rows with
exactly the loss training reports, and the planner traces what training
really allocates.

Why not `model(...).logits`: the output layer over every position makes a
(tokens × vocabulary) tensor, its float32 copy and, in the backward, a zeroed
gradient of the same size, when only the response positions carry a loss.
Here the decoder's hidden states are taken at the positions that have a
target, and the output layer and cross-entropy run over them in chunks of
`CHUNK` positions; the gradient of each chunk is made at once (softmax minus
one-hot, as Liger's fused linear cross-entropy does), so at most one chunk's
float32 logits are ever alive. Prompt and prefix tuning, whose virtual tokens
enter through peft's own forward, and output layers this cannot read as one
plain `Linear` (a LoRA-wrapped head, a soft-capped one) keep the full-logits
path, which gives the same numbers.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from worker.train.data import IGNORE_INDEX, Batch

CHUNK = 1024  # positions per output-layer chunk: 1024 × 49k vocabulary × 4 bytes ≈ 200 MB at most


def _wide(dtype: torch.dtype) -> torch.dtype:
    """float32 for half-precision states (the loss is always summed in at least float32), else their own."""
    return torch.promote_types(dtype, torch.float32)


class _LinearCrossEntropy(torch.autograd.Function):
    """Summed cross-entropy of `hidden @ weight.T + bias` against `targets`, the gradients made in the forward."""

    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                targets: torch.Tensor, chunk: int) -> torch.Tensor:
        needs_h, needs_w, needs_b = ctx.needs_input_grad[:3]
        wide = _wide(hidden.dtype)
        total = torch.zeros((), dtype=torch.float64, device=hidden.device)
        grad_h = torch.empty_like(hidden) if needs_h else None
        grad_w = torch.zeros_like(weight, dtype=wide) if needs_w else None
        grad_b = torch.zeros_like(bias, dtype=wide) if needs_b and bias is not None else None
        for start in range(0, hidden.shape[0], chunk):
            h, t = hidden[start:start + chunk], targets[start:start + chunk]
            logits = F.linear(h, weight, bias).to(wide)
            picked = logits.gather(1, t[:, None]).squeeze(1)
            # logsumexp by hand, in the logits' own storage (torch.logsumexp allocates a copy of its input)
            top = logits.amax(dim=-1, keepdim=True)
            sums = logits.sub_(top).exp_().sum(dim=-1)
            total += (top.squeeze(1) + sums.log() - picked).sum(dtype=torch.float64)
            if grad_h is None and grad_w is None and grad_b is None:
                continue
            probs = logits.div_(sums[:, None])  # the softmax, still in the same storage
            probs[torch.arange(t.shape[0], device=t.device), t] -= 1.0
            grad = probs.to(h.dtype)
            if grad_h is not None:
                torch.matmul(grad, weight.to(grad.dtype), out=grad_h[start:start + chunk])
            if grad_w is not None:
                grad_w.addmm_(grad.t().to(wide), h.to(wide))
            if grad_b is not None:
                grad_b += probs.sum(0)
            del logits, probs, grad, picked, top, sums
        ctx.save_for_backward(*(g for g in (grad_h, grad_w, grad_b) if g is not None))
        ctx.has = (grad_h is not None, grad_w is not None, grad_b is not None)
        ctx.dtypes = (weight.dtype, None if bias is None else bias.dtype)
        return total.to(wide)

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        saved = iter(ctx.saved_tensors)
        grad_h, grad_w, grad_b = (next(saved) if has else None for has in ctx.has)
        return (None if grad_h is None else grad_h * grad_out.to(grad_h.dtype),
                None if grad_w is None else (grad_w * grad_out).to(ctx.dtypes[0]),
                None if grad_b is None else (grad_b * grad_out).to(ctx.dtypes[1]),
                None, None)


def linear_cross_entropy(hidden: torch.Tensor, head: torch.nn.Linear, targets: torch.Tensor,
                         chunk: int = CHUNK) -> torch.Tensor:
    """Summed next-token cross-entropy of (positions × hidden) states through `head`, never the full logits."""
    if not torch.is_grad_enabled():
        wide = _wide(hidden.dtype)
        total = torch.zeros((), dtype=torch.float64, device=hidden.device)
        for start in range(0, hidden.shape[0], chunk):
            logits = head(hidden[start:start + chunk]).to(wide)
            total += F.cross_entropy(logits, targets[start:start + chunk], reduction="sum")
        return total.to(wide)
    return _LinearCrossEntropy.apply(hidden, head.weight, head.bias, targets, chunk)


def _parts(model: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Linear] | None:
    """(decoder, output layer) when the targets-only path applies to this model, else None."""
    peft_config = getattr(model, "active_peft_config", None)
    if peft_config is not None and peft_config.is_prompt_learning:
        return None  # virtual tokens are added by peft's forward
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    config = getattr(base, "config", None)
    if type(head) is not torch.nn.Linear or getattr(config, "final_logit_softcapping", None) \
            or getattr(config, "logit_scale", None) not in (None, 1, 1.0):
        return None
    decoder = getattr(base, "base_model", base)
    if decoder is base:
        return None
    return decoder, head


def model_inputs(batch: Batch, device: torch.device) -> dict[str, torch.Tensor | bool]:
    """What the decoder takes for this batch: padded rows with their mask, or one packed row with
    position ids restarting at every row (transformers then keeps attention inside each row; without
    `use_cache=False` it skips that mask and rows attend across each other)."""
    inputs: dict[str, torch.Tensor | bool] = {"input_ids": batch.input_ids.to(device), "use_cache": False}
    if batch.position_ids is not None:
        inputs["position_ids"] = batch.position_ids.to(device)
    else:
        inputs["attention_mask"] = batch.attention_mask.to(device)
    return inputs


def summed_loss(model: torch.nn.Module, batch: Batch, device: torch.device) -> torch.Tensor:
    """Sum of next-token cross-entropy over response tokens; the caller divides."""
    targets = batch.labels[:, 1:].to(device)
    parts = _parts(model)
    if parts is None:
        return _full_logits_loss(model, batch, device, targets)
    decoder, head = parts
    hidden = decoder(**model_inputs(batch, device)).last_hidden_state
    picked = targets != IGNORE_INDEX
    return linear_cross_entropy(hidden[:, :-1][picked], head, targets[picked])


def _full_logits_loss(model: torch.nn.Module, batch: Batch, device: torch.device,
                      targets: torch.Tensor) -> torch.Tensor:
    input_ids = batch.input_ids.to(device)
    logits = model(**model_inputs(batch, device)).logits
    # Prompt tuning prepends its virtual tokens, so its logits are that many
    # positions longer than the input; the input's own positions are the last ones.
    logits = logits[:, logits.shape[1] - input_ids.shape[1]:]
    return F.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE_INDEX, reduction="sum"
    )
