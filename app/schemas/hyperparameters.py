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
    checkpoint_every: int = Field(
        50, ge=0, le=1_000_000,
        description="Steps between checkpoints a retry resumes from (0: none; a cancel still saves one)",
    )
    keep_checkpoints: int = Field(3, ge=1, le=100, description="Checkpoints kept; older ones are deleted")
    eval_fraction: float | None = Field(
        None, gt=0, lt=1, description="Fraction of the rows held out for evaluation (or give eval_count)"
    )
    eval_count: int | None = Field(
        None, ge=1, le=1_000_000, description="Rows held out for evaluation (or give eval_fraction)"
    )
    eval_every: int = Field(
        0, ge=0, le=1_000_000,
        description="Steps between evaluation-loss measurements on the held-out rows (0: at the end only)",
    )
    sample_every: int = Field(
        0, ge=0, le=1_000_000,
        description="Steps between sample generations from a few held-out prompts (0: none)",
    )

    @model_validator(mode="after")
    def _one_length(self) -> Hyperparameters:
        if self.max_steps is not None and self.epochs is not None:
            raise ValueError("give either max_steps or epochs, not both")
        if self.max_steps is None and self.epochs is None:
            self.max_steps = 100
        if self.eval_fraction is not None and self.eval_count is not None:
            raise ValueError("give either eval_fraction or eval_count, not both")
        if self.eval_every and self.eval_fraction is None and self.eval_count is None:
            raise ValueError("eval_every needs held-out rows: set eval_fraction or eval_count")
        return self
