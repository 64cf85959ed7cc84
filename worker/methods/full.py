"""Full fine-tuning: every weight trains.

The artifact is a plain `save_pretrained` model folder (config + safetensors),
which `AutoModelForCausalLM.from_pretrained` loads as is. The optimiser is
the user's pick (`FullOptions.optimizer`, see `worker.methods.optimizers`).
"""
from __future__ import annotations

from pathlib import Path

import torch
from transformers import PreTrainedModel

from app.methods.full import FullOptions


def build(model: PreTrainedModel, options: FullOptions) -> torch.nn.Module:
    """Unfreeze every parameter (a freshly loaded model already is; be explicit)."""
    model.requires_grad_(True)
    return model


def save(model: torch.nn.Module, output_dir: Path, base_model_path: str) -> None:
    """A standalone model folder; also used by `freeze`.

    The loop turns `use_cache` off for gradient checkpointing; a download is
    for inference, so the saved config turns it back on.
    """
    if not isinstance(model, PreTrainedModel):
        raise TypeError(f"expected a transformers model, got {type(model).__name__}")
    model.config.use_cache = True
    model.save_pretrained(str(output_dir))
