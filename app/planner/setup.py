"""One method's training configuration as both estimators read it.

Why one object: the instant and the traced estimator must answer the same
question, so the request is resolved once (the method's validated options,
the optimiser actually used, the LoRA targets, the virtual tokens) and both
read the result. What a method is (its options, its traits) comes from its
declaration in `app.methods`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from app.methods import MethodOptions, MethodSpec, get_spec, resolve_targets
from app.planner.architecture import Architecture

Precision = Literal["bf16", "mixed", "fp32"]
OptimizerName = Literal["adamw", "adamw_8bit", "paged_adamw_8bit", "sgd", "adafactor"]


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
    objective: str = "sft"  # sft, dpo (app.planner.dpo), or dpo_pairs: a DPO step's 2·b sequences as one batch
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
        spec = get_spec(method)
        parsed = spec.parse(options)
        chosen = getattr(parsed, "optimizer", None) or spec.default_optimizer
        if "optimizer" not in parsed.model_fields_set and optimizer is not None:
            chosen = optimizer
        return cls(
            method=method, options=parsed, optimizer=chosen,  # type: ignore[arg-type]
            options_dict=parsed.model_dump(), **kwargs,
        )

    @property
    def spec(self) -> MethodSpec:
        return get_spec(self.method)

    @property
    def tokens(self) -> int:
        """Tokens in one micro-batch."""
        return self.batch_size * self.seq_len

    @property
    def virtual_tokens(self) -> int:
        return int(self.options_dict.get("num_virtual_tokens", 0)) if self.spec.virtual_tokens else 0

    @property
    def uses_checkpointing(self) -> bool:
        """A method that cannot checkpoint (prefix tuning) is estimated without it."""
        return self.gradient_checkpointing and self.spec.checkpointing

    def lora_targets(self, arch: Architecture) -> list[str]:
        """The LoRA-family targets as module names of `arch` (its own Linear modules for all-linear)."""
        return resolve_targets(self.options_dict["target_modules"], arch.linear_modules()) if self.spec.lora else []

    def galore_targets(self, arch: Architecture) -> list[str]:
        """The matrices whose gradients are projected (GaLore trains the base with its own optimiser)."""
        if not self.spec.low_rank_gradients:
            return []
        return resolve_targets(self.options_dict["target_modules"], arch.linear_modules())


def qlora_note(setup: TrainingSetup) -> str:
    """What QLoRA's 4-bit base computes in and why (the default follows the precision), for the plan's notes."""
    from app.methods.qlora import autocast_for, compute_dtype_for

    dtype = compute_dtype_for(setup.options_dict, setup.precision)
    why = ("method_config.compute_dtype" if setup.options_dict.get("compute_dtype")
           else f"the default for precision {setup.precision}")
    if autocast_for(setup.options_dict, setup.precision):
        how = f"the step runs under {dtype} autocast, whose speed the time assumes"
    else:
        how = "adapters, attention and the head run in float32, yet the time assumes the GPU's bf16 rate"
    return (f"the 4-bit base computes in {dtype} ({why}): {how}; embeddings, norms and the output layer are "
            "fp32 after prepare_model_for_kbit_training")
