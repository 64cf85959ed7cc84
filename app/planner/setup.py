"""One method's training configuration as both estimators read it.

Why one object: the instant and the traced estimator must answer the same
question, so the request is resolved once (the method's validated options,
the optimiser actually used, the LoRA targets, the virtual tokens) and both
read the result.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from app.schemas.methods import LORA_TARGET_PRESETS, METHOD_OPTIONS, MethodOptions

Precision = Literal["bf16", "mixed", "fp32"]
OptimizerName = Literal["adamw", "adamw_8bit", "paged_adamw_8bit", "sgd", "adafactor"]
PEFT_LORA = frozenset({"lora", "dora", "qlora"})


@dataclass(frozen=True)
class TrainingSetup:
    """What one training step of one method looks like."""

    method: str
    options: MethodOptions
    seq_len: int
    batch_size: int = 1
    gradient_accumulation: int = 1
    gradient_checkpointing: bool = False
    precision: Precision = "bf16"
    optimizer: OptimizerName = "adamw"
    options_dict: dict[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def build(
        cls, method: str, options: dict[str, Any] | MethodOptions | None = None, *, optimizer: str | None = None,
        **kwargs: Any,
    ) -> "TrainingSetup":
        """Validate `options` with the method's own model; pick the optimiser.

        The optimiser named in the method's options wins when the user set it;
        else the request's; else the method's default (QLoRA: paged 8-bit AdamW).
        """
        model = METHOD_OPTIONS[method]
        parsed = options if isinstance(options, MethodOptions) else model.model_validate(options or {})
        chosen = getattr(parsed, "optimizer", None)
        if "optimizer" not in parsed.model_fields_set and optimizer is not None:
            chosen = optimizer
        return cls(
            method=method, options=parsed, optimizer=chosen or "adamw",  # type: ignore[arg-type]
            options_dict=parsed.model_dump(), **kwargs,
        )

    @property
    def tokens(self) -> int:
        """Tokens in one micro-batch."""
        return self.batch_size * self.seq_len

    @property
    def virtual_tokens(self) -> int:
        return int(self.options_dict.get("num_virtual_tokens", 0)) if self.method in {"prefix", "prompt"} else 0

    @property
    def uses_checkpointing(self) -> bool:
        """Prefix tuning cannot checkpoint (its prefixes arrive as a KV cache, which checkpointed layers drop)."""
        return self.gradient_checkpointing and self.method != "prefix"

    @property
    def lora_targets(self) -> list[str]:
        if self.method not in PEFT_LORA:
            return []
        return _targets(self.options_dict["target_modules"])

    @property
    def galore_targets(self) -> list[str]:
        return _targets(self.options_dict["target_modules"]) if self.method == "galore" else []


def _targets(value: str | list[str]) -> list[str]:
    return list(LORA_TARGET_PRESETS[value]) if isinstance(value, str) else list(value)
