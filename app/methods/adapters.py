"""Bottleneck adapters (AdapterHub's Houlsby and Pfeiffer configurations), our implementation."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from app.methods.base import MethodError, MethodOptions, MethodSpec, Optimizer
from app.planner.architecture import Architecture


class AdaptersOptions(MethodOptions):
    config: Literal["houlsby", "pfeiffer"] = Field(
        "pfeiffer", description="pfeiffer: one adapter after the FFN · houlsby: after attention and after the FFN"
    )
    reduction_factor: int = Field(16, ge=1, le=1024, description="Hidden size ÷ bottleneck size")
    non_linearity: Literal["relu", "gelu", "silu", "tanh"] = Field("relu", description="Activation in the bottleneck")
    optimizer: Optimizer = Field("adamw", description="adamw, adamw_8bit (bitsandbytes), sgd or adafactor")


def check(options: AdaptersOptions, arch: Architecture) -> None:
    """A reduction factor above the hidden size leaves no bottleneck: that would train something else."""
    if options.reduction_factor > arch.hidden_size:
        raise MethodError("reduction_factor", f"reduction_factor {options.reduction_factor} is above the model's "
                                              f"hidden size {arch.hidden_size}, which leaves no bottleneck; use at "
                                              f"most {arch.hidden_size} (16 is typical)")


SPEC = MethodSpec(
    name="adapters", label="Bottleneck adapters", options=AdaptersOptions, check=check,
    trains="small bottleneck modules after attention and/or the FFN", artifact="bottleneck",
    bottleneck=True,
)
