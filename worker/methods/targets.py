"""The names `target_modules` resolves against on a loaded model.

Why from the model and not from a list: `all-linear` means every Linear but the output layer (peft's
preset), which is Llama's seven projections on most models but Phi-3's fused `qkv_proj` /
`gate_up_proj`, and only the attention projections on a mixture-of-experts model, whose experts
are 3-D parameters (the planner reads the same from `Architecture.linear_modules`).
"""
from __future__ import annotations

import torch


def linear_names(model: torch.nn.Module) -> list[str]:
    """Last name parts of the model's Linear modules, the output layer excepted, in model order."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    names: dict[str, None] = {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and module is not head:
            names[name.rsplit(".", 1)[-1]] = None
    return list(names)
