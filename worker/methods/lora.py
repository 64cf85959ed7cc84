"""LoRA: low-rank A·B updates beside chosen projections, base weights frozen.

We use peft's own `LoraConfig` and `get_peft_model`, so the artifact is a
standard PEFT folder that `PeftModel.from_pretrained` loads as is. DoRA and
QLoRA reuse `build`, `save` and `merge` from here.

`merge` writes the second download, a plain model folder with the adapter
merged into the base weights (`worker.merge`).
"""
from __future__ import annotations

import warnings
from pathlib import Path

import torch
from peft import LoraConfig, PeftConfig, PeftModel, get_peft_model
from transformers import PreTrainedModel

from app.methods.lora import LoraOptions
from worker.methods.targets import linear_names


def build(model: PreTrainedModel, options: LoraOptions, *, use_dora: bool = False) -> torch.nn.Module:
    """Wrap the model with LoRA adapters (DoRA's with `use_dora`); peft freezes everything else."""
    config = LoraConfig(
        r=options.r,
        lora_alpha=options.alpha,
        lora_dropout=options.dropout,
        target_modules=options.resolved_targets(linear_names(model)),
        use_rslora=options.use_rslora,
        use_dora=use_dora,
        task_type="CAUSAL_LM",
    )
    return wrap(model, config)


def wrap(model: PreTrainedModel, config: PeftConfig) -> PeftModel:
    """`get_peft_model`, for every PEFT method (LoRA, DoRA, prefix, prompt)."""
    with warnings.catch_warnings():
        # peft 0.21 reads transformers' deprecated `is_gradient_checkpointing`
        # property; the FutureWarning is about peft's code, not the user's job.
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return get_peft_model(model, config)


def save(model: torch.nn.Module, output_dir: Path, base_model_path: str) -> None:
    """Write adapter_config.json + adapter_model.safetensors, for any PEFT method.

    `base_model_name_or_path` is set explicitly: peft copies it from the
    model's `name_or_path`, which a caller could have changed, and the
    download is only loadable if it names the base the adapter was trained on.
    """
    if not isinstance(model, PeftModel):
        raise TypeError(f"expected a PeftModel, got {type(model).__name__}")
    for adapter_config in model.peft_config.values():
        adapter_config.base_model_name_or_path = base_model_path
    model.save_pretrained(str(output_dir), safe_serialization=True)


def merge(adapter_dir: Path, base_model_path: str, out_dir: Path) -> Path:
    """The merged download: the saved adapter folded into a float32 copy of the base, written atomically."""
    from worker.merge import merge_to_folder

    return merge_to_folder(adapter_dir, base_model_path, out_dir)
