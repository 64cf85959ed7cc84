"""Per-method options, one pydantic model per method.

A job body is a discriminated union on `method` (see `app.schemas.jobs`), so a
wrong option is refused with a 422 naming `method_config.<field>` before
anything is queued. Each field's description is the one-line hint the job
form shows beside it.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

LORA_TARGET_PRESETS: dict[str, list[str]] = {
    "minimal": ["q_proj", "v_proj"],
    "attention": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "all-linear": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
}

Optimizer = Literal["adamw", "adamw_8bit", "sgd", "adafactor"]


def _check_targets(value: str | list[str]) -> str | list[str]:
    if isinstance(value, str) and value not in LORA_TARGET_PRESETS:
        raise ValueError(f"unknown preset {value!r}: use {', '.join(LORA_TARGET_PRESETS)} or a list of module names")
    if isinstance(value, list):
        if not value:
            raise ValueError("name at least one module")
        for name in value:
            if not name or not name.replace("_", "").replace(".", "").isalnum():
                raise ValueError(f"{name!r} is not a module name")
    return value


class MethodOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FullOptions(MethodOptions):
    optimizer: Optimizer = Field("adamw", description="adamw, adamw_8bit (bitsandbytes), sgd or adafactor")


class FreezeOptions(MethodOptions):
    trainable_layers: int = Field(2, ge=1, le=1000, description="How many of the last decoder layers train")
    train_lm_head: bool = Field(True, description="Train the output head too")
    train_embeddings: bool = Field(False, description="Train the input embeddings too")
    optimizer: Optimizer = Field("adamw", description="adamw, adamw_8bit (bitsandbytes), sgd or adafactor")


class LoraOptions(MethodOptions):
    r: int = Field(8, ge=1, le=1024, description="Rank of the low-rank update; 8–64 is typical")
    alpha: float = Field(16, gt=0, le=4096, description="The update is scaled by alpha / r")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the adapter input")
    target_modules: str | list[str] = Field(
        "attention", description="minimal = q,v · attention = q,k,v,o · all-linear = attention + MLP, or module names"
    )
    use_rslora: bool = Field(False, description="Scale by alpha / sqrt(r) (rank-stabilised LoRA)")

    @field_validator("target_modules")
    @classmethod
    def _targets(cls, value: str | list[str]) -> str | list[str]:
        return _check_targets(value)

    def resolved_targets(self) -> list[str]:
        if isinstance(self.target_modules, str):
            return LORA_TARGET_PRESETS[self.target_modules]
        return list(self.target_modules)


class DoraOptions(LoraOptions):
    """LoRA with weight decomposition (magnitude and direction), Liu et al. 2024."""


class QloraOptions(LoraOptions):
    quant_type: Literal["nf4", "fp4"] = Field("nf4", description="4-bit data type of the frozen base")
    double_quant: bool = Field(True, description="Quantise the quantisation constants too (saves ~0.37 bit/param)")
    compute_dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32", description="Dtype of the matmuls; bfloat16 on GPUs that support it"
    )
    optimizer: Literal["paged_adamw_8bit", "adamw_8bit", "adamw"] = Field(
        "paged_adamw_8bit", description="Paged 8-bit AdamW keeps optimiser spikes off the GPU"
    )


class GaloreOptions(MethodOptions):
    rank: int = Field(128, ge=1, le=8192, description="Rank of the gradient projection")
    update_proj_gap: int = Field(200, ge=1, le=100_000, description="Steps between projection updates (SVD)")
    scale: float = Field(0.25, gt=0, le=10, description="Scale of the projected update")
    target_modules: str | list[str] = Field("all-linear", description="Which weight matrices get projected gradients")

    @field_validator("target_modules")
    @classmethod
    def _targets(cls, value: str | list[str]) -> str | list[str]:
        return _check_targets(value)


class AdaptersOptions(MethodOptions):
    config: Literal["houlsby", "pfeiffer"] = Field(
        "pfeiffer", description="pfeiffer: one adapter after the FFN · houlsby: after attention and after the FFN"
    )
    reduction_factor: int = Field(16, ge=1, le=1024, description="Hidden size ÷ bottleneck size")
    non_linearity: Literal["relu", "gelu", "silu", "tanh"] = Field("relu", description="Activation in the bottleneck")


class PrefixOptions(MethodOptions):
    num_virtual_tokens: int = Field(20, ge=1, le=1024, description="Trainable key/value positions per layer")


class PromptOptions(MethodOptions):
    num_virtual_tokens: int = Field(20, ge=1, le=1024, description="Trainable tokens prepended to the input")
    init: Literal["random", "text"] = Field("random", description="Start from random vectors or from a text's embeddings")
    init_text: str | None = Field(None, max_length=2000, description="The text, when init is text")

    @model_validator(mode="after")
    def _text_when_needed(self) -> "PromptOptions":
        if self.init == "text" and not (self.init_text and self.init_text.strip()):
            raise ValueError("init_text is required when init is 'text'")
        return self


METHOD_OPTIONS: dict[str, type[MethodOptions]] = {
    "full": FullOptions,
    "freeze": FreezeOptions,
    "lora": LoraOptions,
    "dora": DoraOptions,
    "qlora": QloraOptions,
    "galore": GaloreOptions,
    "adapters": AdaptersOptions,
    "prefix": PrefixOptions,
    "prompt": PromptOptions,
}
METHODS: tuple[str, ...] = tuple(METHOD_OPTIONS)
# Methods the workers run; a method outside this set would be refused at
# submission with a message rather than fail later on a worker. All nine run
# today (QLoRA still needs bitsandbytes importable: see app.jobs.crud).
AVAILABLE_METHODS: frozenset[str] = frozenset(METHOD_OPTIONS)
METHOD_LABELS: dict[str, str] = {
    "full": "Full fine-tuning",
    "freeze": "Freeze (train the last layers)",
    "lora": "LoRA",
    "dora": "DoRA",
    "qlora": "QLoRA (4-bit base)",
    "galore": "GaLore",
    "adapters": "Bottleneck adapters",
    "prefix": "Prefix tuning",
    "prompt": "Prompt tuning",
}
