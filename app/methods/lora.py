"""LoRA: low-rank A·B updates beside chosen projections; the base stays frozen (peft `LoraConfig`)."""
from __future__ import annotations

from pydantic import Field

from app.methods.base import MethodSpec, Optimizer, TargetedOptions, TargetModules, targets_in
from app.planner.architecture import Architecture


class LoraOptions(TargetedOptions):
    r: int = Field(8, ge=1, le=1024, description="Rank of the low-rank update; 8–64 is typical")
    alpha: float = Field(16, gt=0, le=4096, description="The update is scaled by alpha / r")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the adapter input (0, peft's default: its masks "
                                                        "cost 3-10 % of a CPU step; 0.05 can help small datasets)")
    target_modules: TargetModules = Field(
        "attention", description="minimal = q,v · attention = q,k,v,o · all-linear = every Linear but the head "
                                 "(attention + MLP; attention only on mixture-of-experts models), or module names"
    )
    use_rslora: bool = Field(False, description="Scale by alpha / sqrt(r) (rank-stabilised LoRA)")
    optimizer: Optimizer = Field("adamw", description="adamw, adamw_8bit (bitsandbytes), sgd or adafactor")


def check(options: LoraOptions, arch: Architecture) -> None:
    targets_in(arch, options.resolved_targets(arch.linear_modules()))


SPEC = MethodSpec(
    name="lora", label="LoRA", options=LoraOptions, check=check, trains="low-rank adapters beside the targets",
    artifact="peft", downloads=("adapter", "merged"), lora=True, peft=True,
)
