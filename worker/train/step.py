"""One supervised optimiser step: the loss on the answers, normalised over the whole step."""
from __future__ import annotations

from collections.abc import Iterator

import torch

from worker.train.data import Batch
from worker.train.loss import summed_loss

GRAD_CLIP = 1.0  # max global grad norm; keeps early random-init steps from blowing up


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batches: Iterator[Batch],
               accumulation: int, params: list[torch.nn.Parameter], device: torch.device,
               autocast: torch.dtype | None = None) -> tuple[float, float, int]:
    """One optimiser step over `accumulation` micro-batches; returns (loss, grad norm, tokens).

    The whole step is fetched first because the loss is normalised by the
    target count of the step, not of each micro-batch: accumulating then
    computes what one big batch would have. With `autocast` (precision
    `mixed`) the forward runs under `torch.autocast` in that dtype, as the
    traced planner's step does (`worker.trace.step.training_step`); the
    backward follows the forward's dtypes and the weights stay as loaded.
    """
    micro_batches = [next(batches) for _ in range(accumulation)]
    n_targets = sum(b.n_targets for b in micro_batches)
    loss_value = 0.0
    for batch in micro_batches:
        if autocast is None:  # the default path: no context at all
            loss = summed_loss(model, batch, device) / n_targets
        else:
            with torch.autocast(device.type, dtype=autocast):
                loss = summed_loss(model, batch, device) / n_targets
        loss.backward()
        loss_value += loss.item()
    grad_norm = float(torch.nn.utils.clip_grad_norm_(params, GRAD_CLIP))
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss_value, grad_norm, sum(b.n_tokens for b in micro_batches)
