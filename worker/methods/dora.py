"""DoRA (Liu et al. 2024): LoRA with the weight decomposed into magnitude and direction.

peft's `LoraConfig(use_dora=True)`: the LoRA update steers the direction of
each target weight and a trainable per-output-channel magnitude vector
rescales it. Options, build and the PEFT folder are LoRA's.
"""
from __future__ import annotations

import torch
from transformers import PreTrainedModel

from app.methods.dora import DoraOptions

from worker.methods import lora
from worker.methods.lora import merge, save  # noqa: F401 - the same PEFT folder and merge as LoRA


def build(model: PreTrainedModel, options: DoraOptions) -> torch.nn.Module:
    return lora.build(model, options, use_dora=True)
