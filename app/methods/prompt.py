"""Prompt tuning (Lester et al. 2021): trainable virtual tokens at the input (peft)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from app.methods.base import MethodOptions, MethodSpec, Optimizer
from app.methods.prefix import PREFIX_LR


class PromptOptions(MethodOptions):
    num_virtual_tokens: int = Field(20, ge=1, le=1024, description="Trainable tokens prepended to the input")
    init: Literal["random", "text"] = Field("random", description="Start from random vectors or from a text's embeddings")
    init_text: str | None = Field(None, max_length=2000, description="The text, when init is text")
    optimizer: Optimizer = Field("adamw", description="adamw, adamw_8bit (bitsandbytes), sgd or adafactor")

    @model_validator(mode="after")
    def _text_when_needed(self) -> "PromptOptions":
        if self.init == "text" and not (self.init_text and self.init_text.strip()):
            raise ValueError("init_text is required when init is 'text'")
        return self


SPEC = MethodSpec(
    name="prompt", label="Prompt tuning", options=PromptOptions, trains="virtual tokens at the input",
    artifact="peft", learning_rate=PREFIX_LR, peft=True, virtual_tokens="prompt",
)
