"""Prefix tuning (Li & Liang 2021): trainable key/value prefixes in every layer (peft)."""
from __future__ import annotations

from pydantic import Field

from app.methods.base import MethodOptions, MethodSpec, Optimizer

PREFIX_LR = 1e-2  # virtual tokens start far from any useful value (peft's examples use 1e-2 to 3e-2)


class PrefixOptions(MethodOptions):
    num_virtual_tokens: int = Field(20, ge=1, le=1024, description="Trainable key/value positions per layer")
    optimizer: Optimizer = Field("adamw", description="adamw, adamw_8bit (bitsandbytes), sgd or adafactor")


SPEC = MethodSpec(
    name="prefix", label="Prefix tuning", options=PrefixOptions, trains="key/value prefixes in every layer",
    artifact="peft", learning_rate=PREFIX_LR, peft=True, virtual_tokens="prefix",
    no_checkpointing="prefix tuning does not work with gradient checkpointing: the prefixes reach the layers as a "
                     "key/value cache, which checkpointed layers drop; turn gradient_checkpointing off, or use "
                     "prompt tuning or LoRA",
)
