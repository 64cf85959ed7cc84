"""Freeze: only the last N decoder layers train (and, if asked, the head and the embeddings)."""
from __future__ import annotations

from pydantic import Field

from app.methods.base import FULL_LR, MethodError, MethodOptions, MethodSpec, Optimizer
from app.planner.architecture import Architecture


class FreezeOptions(MethodOptions):
    trainable_layers: int = Field(2, ge=1, le=1000, description="How many of the last decoder layers train")
    train_lm_head: bool = Field(True, description="Train the output head too")
    train_embeddings: bool = Field(False, description="Train the input embeddings too")
    optimizer: Optimizer = Field("adamw", description="adamw, adamw_8bit (bitsandbytes), sgd or adafactor")


def check(options: FreezeOptions, arch: Architecture) -> None:
    if options.trainable_layers > arch.num_layers:
        raise MethodError("trainable_layers", f"trainable_layers {options.trainable_layers} is more than the "
                                              f"model's {arch.num_layers} decoder layers")


SPEC = MethodSpec(
    name="freeze", label="Freeze (train the last layers)", options=FreezeOptions, check=check,
    trains="the last decoder layers (and optionally the head and embeddings)", artifact="model",
    learning_rate=FULL_LR, trains_last_layers=True,
)
