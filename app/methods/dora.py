"""DoRA (Liu et al. 2024): LoRA with each target weight split into magnitude and direction."""
from __future__ import annotations

from dataclasses import replace

from app.methods.lora import SPEC as LORA
from app.methods.lora import LoraOptions


class DoraOptions(LoraOptions):
    """LoRA's options; peft's `use_dora=True` adds a trainable magnitude per output channel."""


SPEC = replace(LORA, name="dora", label="DoRA", options=DoraOptions, magnitude=True,
               trains="low-rank adapters and a magnitude per output channel of each target")
