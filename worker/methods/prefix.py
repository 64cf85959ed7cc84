"""Prefix tuning (Li & Liang 2021): trainable key/value prefixes in every layer.

peft's `PrefixTuningConfig`: for each forward pass peft turns its trained
prefix into a key/value cache of `num_virtual_tokens` positions and hands it
to the model as `past_key_values`, so every attention layer attends to the
prefix first. The logits cover only the real tokens (no extra positions).

Not with gradient checkpointing: transformers' checkpointed decoder layers
drop any `past_key_values` they are given (replaying a cache write on the
backward pass would write it twice), which would silently remove the prefix;
peft 0.21 refuses the combination, and so do we, with a message that says
what to do instead.
"""
from __future__ import annotations

import torch
from peft import PrefixTuningConfig
from transformers import PreTrainedModel

from app.methods.prefix import SPEC, PrefixOptions
from worker.methods.lora import save, wrap  # noqa: F401 - the same PEFT folder as LoRA


def build(model: PreTrainedModel, options: PrefixOptions) -> torch.nn.Module:
    if model.is_activation_checkpointing:
        raise ValueError(SPEC.no_checkpointing)
    config = PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=options.num_virtual_tokens)
    return wrap(model, config)
