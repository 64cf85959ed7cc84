"""The job spec the worker hands to the training subprocess, as a JSON file.

The API has already validated the user's config strictly; here we only read
what training needs and ignore anything else, so that the API can add fields
(names, notes, plan ids) without a lock-step change to the trainer. Paths are
absolute and resolved by the worker from database ids, never typed by users.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator


class TrainHyperparameters(BaseModel):
    """Method-independent knobs; defaults match the API's so a sparse spec still runs."""

    model_config = ConfigDict(extra="ignore")

    max_steps: int | None = Field(None, ge=1)
    epochs: float | None = Field(None, gt=0)
    learning_rate: float = Field(2e-4, gt=0)
    batch_size: int = Field(8, ge=1)
    seq_len: int = Field(256, ge=2)
    gradient_accumulation: int = Field(1, ge=1)
    warmup_steps: int = Field(0, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    seed: int = 42
    log_every: int = Field(1, ge=1)
    gradient_checkpointing: bool = False
    checkpoint_every: int = Field(50, ge=0)  # 0: none (a cancel still saves one)
    keep_checkpoints: int = Field(3, ge=1)
    eval_fraction: float | None = Field(None, gt=0, lt=1)
    eval_count: int | None = Field(None, ge=1)
    eval_every: int = Field(0, ge=0)  # 0: only at the end, when rows are held out
    sample_every: int = Field(0, ge=0)  # 0: no samples

    @model_validator(mode="after")
    def _exactly_one_length(self) -> "TrainHyperparameters":
        if (self.max_steps is None) == (self.epochs is None):
            raise ValueError("exactly one of max_steps and epochs must be set")
        if self.eval_fraction is not None and self.eval_count is not None:
            raise ValueError("give either eval_fraction or eval_count, not both")
        return self

    def total_steps(self, rows: int) -> int:
        """Optimizer steps to run; an epoch count is rounded up so the last rows are seen."""
        if self.max_steps is not None:
            return self.max_steps
        assert self.epochs is not None
        per_step = self.batch_size * self.gradient_accumulation
        return max(1, math.ceil(self.epochs * rows / per_step))


class JobConfig(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str
    dataset: str
    method: str
    hyperparameters: TrainHyperparameters
    # Parsed by the method module itself: only it knows its options.
    method_config: dict[str, Any] = Field(default_factory=dict)


class TrainSpec(BaseModel):
    model_config = ConfigDict(extra="ignore")

    job_id: str
    model_path: str
    dataset_path: Path
    output_dir: Path
    # Where the merged model goes for methods that have one (LoRA, DoRA, QLoRA); none if unset.
    merged_dir: Path | None = None
    # `<job dir>/checkpoints` (app.jobs.checkpoints); defaults to output_dir's sibling.
    checkpoint_dir: Path | None = None
    # Continue from the newest complete checkpoint when there is one; else start afresh
    # (and drop any checkpoints an earlier run left, so they cannot be mistaken for this run's).
    resume: bool = False
    config: JobConfig

    @property
    def checkpoints(self) -> Path:
        return self.checkpoint_dir if self.checkpoint_dir is not None else self.output_dir.parent / "checkpoints"


def load_spec(path: Path) -> TrainSpec:
    """Read and validate a spec file; a pydantic error names the bad field."""
    return TrainSpec.model_validate_json(path.read_text(encoding="utf-8"))
