"""Bottleneck adapters (AdapterHub's Houlsby and Pfeiffer configurations), our implementation.

The base model is frozen and a small bottleneck module (down-projection to
hidden_size // reduction_factor, non-linearity, up-projection, residual) goes
after the feed-forward block of every decoder layer (pfeiffer), or after the
attention block and after the feed-forward block (houlsby). See
`worker.bottleneck` for the module, the folder format and the public loader
(`worker.bottleneck.from_pretrained` / `load_bottleneck_adapter`), which is
also what `tunedeck generate` uses on these folders.
"""
from __future__ import annotations

from pathlib import Path

import torch
from transformers import PreTrainedModel

from app.methods.adapters import AdaptersOptions

from worker.bottleneck import add_bottleneck_adapters, save_bottleneck_adapter


def build(model: PreTrainedModel, options: AdaptersOptions) -> torch.nn.Module:
    """Freeze the base, attach identity-initialised adapters; only they train."""
    model.requires_grad_(False)
    add_bottleneck_adapters(model, config=options.config, reduction_factor=options.reduction_factor,
                            non_linearity=options.non_linearity)
    return model


def save(model: torch.nn.Module, output_dir: Path, base_model_path: str) -> None:
    """adapter_config.json (adapter_type "bottleneck") + adapter_model.safetensors; the loop adds the tokenizer."""
    save_bottleneck_adapter(model, output_dir, base_model_name_or_path=base_model_path)
