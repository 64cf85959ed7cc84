"""The training objective, shared by the loop (training steps) and evaluation.

Kept apart from the loop so that evaluation measures held-out rows with
exactly the loss training reports.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from worker.train.data import IGNORE_INDEX, Batch


def summed_loss(model: torch.nn.Module, batch: Batch, device: torch.device) -> torch.Tensor:
    """Sum of next-token cross-entropy over response tokens; the caller divides."""
    input_ids = batch.input_ids.to(device)
    logits = model(input_ids=input_ids, attention_mask=batch.attention_mask.to(device)).logits
    # Prompt tuning prepends its virtual tokens, so its logits are that many
    # positions longer than the input; the input's own positions are the last ones.
    logits = logits[:, logits.shape[1] - input_ids.shape[1]:]
    targets = batch.labels[:, 1:].to(device)
    return F.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE_INDEX, reduction="sum"
    )
