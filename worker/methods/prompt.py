"""Prompt tuning (Lester et al. 2021): trainable virtual tokens at the input.

peft's `PromptTuningConfig`: `num_virtual_tokens` trainable embedding vectors
are prepended to the input embeddings, so the model's logits are
`num_virtual_tokens` positions longer than the input (the loop drops those
positions before the loss). They start either random or from the embeddings
of a text (repeated or cut to length), tokenized with the base model's own
tokenizer. Works with gradient checkpointing.
"""
from __future__ import annotations

import torch
from peft import PromptTuningConfig, PromptTuningInit
from transformers import PreTrainedModel

from app.methods.prompt import PromptOptions

from worker.methods.lora import save, wrap  # noqa: F401 - the same PEFT folder as LoRA


def build(model: PreTrainedModel, options: PromptOptions) -> torch.nn.Module:
    """The options model has checked that a text init has its text."""
    from_text = options.init == "text"
    config = PromptTuningConfig(
        task_type="CAUSAL_LM",
        num_virtual_tokens=options.num_virtual_tokens,
        prompt_tuning_init=PromptTuningInit.TEXT if from_text else PromptTuningInit.RANDOM,
        prompt_tuning_init_text=options.init_text if from_text else None,
        # The model was loaded from the base folder, so this is where its tokenizer is.
        tokenizer_name_or_path=model.name_or_path,
    )
    return wrap(model, config)
