"""Evaluation loss on the held-out rows.

Measured in eval mode (no dropout), without gradients, inside a forked RNG
so that evaluating never changes what training draws next: a run evaluated
every 10 steps trains the same weights as one evaluated only at the end, and
a resumed run the same as an uninterrupted one.
"""
from __future__ import annotations

import torch

from worker.train.data import Example, collate
from worker.train.loss import summed_loss


def eval_loss(
    model: torch.nn.Module, examples: list[Example], batch_size: int, pad_id: int, device: torch.device
) -> float:
    """Mean next-token loss per response token over `examples` (the training loss's definition)."""
    was_training = model.training
    total, targets = 0.0, 0
    model.eval()
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            for start in range(0, len(examples), batch_size):
                batch = collate(examples[start:start + batch_size], pad_id)
                total += float(summed_loss(model, batch, device))
                targets += batch.n_targets
    finally:
        model.train(was_training)
    return total / max(targets, 1)
