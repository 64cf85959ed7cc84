"""Optimisers by the names users pick, built over a model's trainable weights.

Every optimiser gets the same two parameter groups: matrices (and other
>= 2-D weights) with the job's weight decay, biases and norm gains (1-D)
without, as in nanoGPT. The loop sets each group's `lr` before every step
(warmup then cosine), so each optimiser here must read `group["lr"]` on
`step()` rather than schedule itself:

- `adamw`: `torch.optim.AdamW`.
- `adamw_8bit` / `paged_adamw_8bit`: bitsandbytes' `AdamW8bit` /
  `PagedAdamW8bit`, whose states are blockwise 8-bit for tensors of at least
  4096 elements (smaller ones keep 32-bit states, bitsandbytes' default).
  Both run on the CPU with bitsandbytes 0.50.
- `sgd`: `torch.optim.SGD` with momentum 0.9 (plain SGD barely moves a model
  in the few hundred steps a fine-tune runs).
- `adafactor`: transformers' `Adafactor` with `relative_step=False` and
  `scale_parameter=False`, so it uses the learning rate we give it (and our
  schedule) instead of its own time-dependent step size.

GaLore's optimiser (`galore_adamw`) is not picked by name: the galore method
builds it with its own parameter groups (see `worker.methods.galore`).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

SGD_MOMENTUM = 0.9

ParamGroups = list[dict[str, Any]]


def _adamw(groups: ParamGroups, lr: float) -> torch.optim.Optimizer:
    return torch.optim.AdamW(groups, lr=lr)


def _adamw_8bit(groups: ParamGroups, lr: float) -> torch.optim.Optimizer:
    import bitsandbytes as bnb  # optional backend: imported only by jobs that ask for it

    return bnb.optim.AdamW8bit(groups, lr=lr)


def _paged_adamw_8bit(groups: ParamGroups, lr: float) -> torch.optim.Optimizer:
    import bitsandbytes as bnb

    return bnb.optim.PagedAdamW8bit(groups, lr=lr)


def _sgd(groups: ParamGroups, lr: float) -> torch.optim.Optimizer:
    return torch.optim.SGD(groups, lr=lr, momentum=SGD_MOMENTUM)


def _adafactor(groups: ParamGroups, lr: float) -> torch.optim.Optimizer:
    from transformers.optimization import Adafactor

    return Adafactor(groups, lr=lr, scale_parameter=False, relative_step=False, warmup_init=False)


OPTIMIZERS: dict[str, Callable[[ParamGroups, float], torch.optim.Optimizer]] = {
    "adamw": _adamw,
    "adamw_8bit": _adamw_8bit,
    "paged_adamw_8bit": _paged_adamw_8bit,
    "sgd": _sgd,
    "adafactor": _adafactor,
}


def build_optimizer(
    model: torch.nn.Module, name: str, learning_rate: float, weight_decay: float
) -> torch.optim.Optimizer:
    """The optimiser `name` over the model's trainable parameters, decay on >= 2-D weights only."""
    try:
        factory = OPTIMIZERS[name]
    except KeyError:
        raise ValueError(f"unknown optimizer {name!r} (known: {', '.join(OPTIMIZERS)})") from None
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the method left no trainable parameters")
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return factory([g for g in groups if g["params"]], learning_rate)


def galore_adamw(
    model: torch.nn.Module,
    targets: list[torch.nn.Parameter],
    *,
    rank: int,
    update_proj_gap: int,
    scale: float,
    learning_rate: float,
    weight_decay: float,
) -> torch.optim.Optimizer:
    """galore-torch's `GaLoreAdamW`: `targets` (2-D weights) get low-rank projected gradients.

    Three groups: the GaLore weights (with weight decay), the other >= 2-D
    weights (with weight decay) and the 1-D ones (without), every group
    reading `group["lr"]` like the other optimisers here. `proj_type="std"`
    projects on the smaller side of each matrix, as the paper does.
    """
    from galore_torch import GaLoreAdamW  # optional backend: imported only by GaLore jobs

    galore_ids = {id(p) for p in targets}
    params = [p for p in model.parameters() if p.requires_grad]
    if not any(id(p) in galore_ids for p in params):
        raise ValueError("GaLore found no trainable target weight to project")
    groups: ParamGroups = [
        {
            "params": [p for p in params if id(p) in galore_ids],
            "weight_decay": weight_decay,
            "rank": rank,
            "update_proj_gap": update_proj_gap,
            "scale": scale,
            "proj_type": "std",
        },
        {"params": [p for p in params if id(p) not in galore_ids and p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if id(p) not in galore_ids and p.dim() < 2], "weight_decay": 0.0},
    ]
    return GaLoreAdamW([g for g in groups if g["params"]], lr=learning_rate, no_deprecation_warning=True)
