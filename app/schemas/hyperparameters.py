"""Training hyperparameters shared by every method."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Hyperparameters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_steps: int | None = Field(None, ge=1, le=1_000_000, description="Optimizer steps to run")
    epochs: float | None = Field(None, gt=0, le=100, description="Passes over the dataset (instead of max_steps)")
    learning_rate: float = Field(2e-4, gt=0, le=1.0, description="Peak learning rate")
    batch_size: int = Field(8, ge=1, le=1024, description="Micro-batch size")
    seq_len: int = Field(256, ge=8, le=131_072, description="Longest sequence in tokens; longer rows are truncated")
    gradient_accumulation: int = Field(1, ge=1, le=1024, description="Micro-batches per optimizer step")
    warmup_steps: int = Field(0, ge=0, le=1_000_000, description="Linear warm-up before cosine decay")
    weight_decay: float = Field(0.0, ge=0, le=1.0)
    seed: int = Field(42, ge=0, le=2**31 - 1)
    log_every: int = Field(1, ge=1, le=10_000, description="Steps between metric events")
    gradient_checkpointing: bool = False

    @model_validator(mode="after")
    def _one_length(self) -> "Hyperparameters":
        if self.max_steps is not None and self.epochs is not None:
            raise ValueError("give either max_steps or epochs, not both")
        if self.max_steps is None and self.epochs is None:
            self.max_steps = 100
        return self
