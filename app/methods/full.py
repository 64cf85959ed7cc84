"""Full fine-tuning: every weight trains with the optimiser the user picks."""
from __future__ import annotations

from pydantic import Field

from app.methods.base import FULL_LR, MethodOptions, MethodSpec, Optimizer


class FullOptions(MethodOptions):
    optimizer: Optimizer = Field("adamw", description="adamw, adamw_8bit (bitsandbytes), sgd or adafactor")


SPEC = MethodSpec(
    name="full", label="Full fine-tuning", options=FullOptions, trains="every weight",
    artifact="model", learning_rate=FULL_LR, trains_base=True,
)
