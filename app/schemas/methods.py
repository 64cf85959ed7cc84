"""Per-method options, one model per method.

A job body is a discriminated union on `method`, so a wrong option is refused
with a 422 naming `method_config.<field>` before anything is queued.
"""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

LORA_TARGET_PRESETS: dict[str, list[str]] = {
    "minimal": ["q_proj", "v_proj"],
    "attention": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "all-linear": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
}


class LoraOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    r: int = Field(8, ge=1, le=1024, description="Rank of the low-rank update")
    alpha: float = Field(16, gt=0, le=4096, description="Scaling numerator (alpha / r)")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the adapter input")
    target_modules: str | list[str] = Field(
        "attention", description="Preset (minimal, attention, all-linear) or a list of module names"
    )
    use_rslora: bool = Field(False, description="Scale by alpha / sqrt(r) (rank-stabilised LoRA)")

    @field_validator("target_modules")
    @classmethod
    def _preset_or_names(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, str) and value not in LORA_TARGET_PRESETS:
            raise ValueError(
                f"unknown preset {value!r}: use {', '.join(LORA_TARGET_PRESETS)} or a list of module names"
            )
        if isinstance(value, list):
            if not value:
                raise ValueError("name at least one module")
            for name in value:
                if not name or not name.replace("_", "").replace(".", "").isalnum():
                    raise ValueError(f"{name!r} is not a module name")
        return value

    def resolved_targets(self) -> list[str]:
        if isinstance(self.target_modules, str):
            return LORA_TARGET_PRESETS[self.target_modules]
        return list(self.target_modules)


METHOD_OPTIONS: dict[str, type[BaseModel]] = {"lora": LoraOptions}
METHODS: tuple[str, ...] = tuple(METHOD_OPTIONS)
