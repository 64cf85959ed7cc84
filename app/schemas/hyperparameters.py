"""Training hyperparameters shared by every method: THE one place for their defaults and bounds.

The job API, the job form, the plan API and the plan page all take their
defaults and bounds from here (the shared `Annotated` types below), and the
trainer parses its spec with the same model, so a default cannot differ
between what a user is shown and what runs. The learning rate's default is
the method's own (`MethodSpec.learning_rate`): `hyperparameters_for(method)`.
"""
from __future__ import annotations

import math
from functools import cache
from typing import Annotated, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

from app.methods import DEFAULT_METHOD, get_spec
from app.prompts import PromptFormat

SEQ_LEN = 512
BATCH_SIZE = 1
GRADIENT_ACCUMULATION = 1
MAX_STEPS = 100

SeqLen = Annotated[int, Field(ge=8, le=131_072, description="Longest sequence in tokens; longer rows are truncated")]
BatchSize = Annotated[int, Field(ge=1, le=1024, description="Micro-batch size")]
GradientAccumulation = Annotated[int, Field(ge=1, le=1024, description="Micro-batches per optimizer step")]
# How rows become batches (worker/train/data.py): grouped by length, padding-free, or plainly padded.
Batching = Literal["grouped", "padding_free", "padded"]
BATCHINGS: tuple[str, ...] = get_args(Batching)
# The dtype recipe the trainer runs, the planner's `precision` (app/planner/setup.py): bf16 weights; mixed =
# fp32 weights under bf16 autocast; fp32. None keeps the worker's own choice (fp32 on a CPU worker).
Precision = Literal["bf16", "mixed", "fp32"]
# What a step optimises (worker/train/objectives.py): sft learns the answers; dpo prefers a preference
# pair's chosen answer over its rejected one, against a reference (Rafailov et al. 2023, sigmoid loss).
Objective = Literal["sft", "dpo"]
DPO_BETA = 0.1
PRECISIONS: tuple[str, ...] = get_args(Precision)
LearningRate = Annotated[float, Field(gt=0, le=10.0, description="Peak learning rate (default: the method's own)")]


class Hyperparameters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_steps: int | None = Field(None, ge=1, le=1_000_000, description="Optimizer steps to run")
    epochs: float | None = Field(None, gt=0, le=100, description="Passes over the dataset (instead of max_steps)")
    learning_rate: LearningRate = get_spec(DEFAULT_METHOD).learning_rate
    batch_size: BatchSize = BATCH_SIZE
    seq_len: SeqLen = SEQ_LEN
    gradient_accumulation: GradientAccumulation = GRADIENT_ACCUMULATION
    warmup_steps: int = Field(0, ge=0, le=1_000_000, description="Linear warm-up before cosine decay")
    weight_decay: float = Field(0.0, ge=0, le=1.0)
    seed: int = Field(42, ge=0, le=2**31 - 1)
    log_every: int = Field(1, ge=1, le=10_000, description="Steps between metric events")
    gradient_checkpointing: bool = False
    precision: Precision | None = Field(
        None,
        description="bf16 (bf16 weights), mixed (fp32 weights, bf16 autocast) or fp32; "
                    "default: the worker's own (fp32 on a CPU worker)",
    )
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
    prompt_format: PromptFormat | None = Field(
        None,
        description="How rows become prompts: chat_template (the model's own), alpaca or plain; "
                    "default: the chat template when the tokenizer has one, else alpaca",
    )

    continue_on_divergence: bool = Field(
        False, description="Go on when the loss becomes NaN/inf or the gradient norm explodes (default: the job "
                           "fails at once, saying to lower the learning rate or add warm-up)")
    objective: Objective = Field("sft", description="sft: learn the answers; dpo: prefer each preference pair's "
                                                    "chosen answer to its rejected one (preference datasets)")
    dpo_beta: float = Field(DPO_BETA, gt=0, le=10, description="DPO's beta: how far the model may move from "
                                                                "the reference (higher: closer to it)")

    batching: Batching | None = Field(
        None,
        description="How rows become batches: grouped (rows of similar length together, little padding), "
                    "padding_free (a batch's rows in one row, attention kept inside each) or padded; "
                    "default: padding_free where flash-attention runs, else grouped",
    )

    @model_validator(mode="after")
    def _one_length(self) -> Hyperparameters:
        if self.max_steps is not None and self.epochs is not None:
            raise ValueError("give either max_steps or epochs, not both")
        if self.max_steps is None and self.epochs is None:
            self.max_steps = MAX_STEPS
        if self.eval_fraction is not None and self.eval_count is not None:
            raise ValueError("give either eval_fraction or eval_count, not both")
        if self.max_steps is not None and self.warmup_steps > self.max_steps:
            raise ValueError(f"warmup_steps {self.warmup_steps} is longer than the run's {self.max_steps} steps: "
                             "the learning rate would never reach its peak")
        if self.dpo_beta != DPO_BETA and self.objective != "dpo":  # (a stored config repeats the default)
            raise ValueError("dpo_beta applies to objective dpo only")
        return self

    @property
    def holds_out(self) -> bool:
        """Rows of the training dataset are held out for evaluation."""
        return self.eval_fraction is not None or self.eval_count is not None

    def total_steps(self, rows: int) -> int:
        """Optimizer steps to run; an epoch count is rounded up so the last rows are seen."""
        if self.max_steps is not None:
            return self.max_steps
        assert self.epochs is not None
        per_step = self.batch_size * self.gradient_accumulation
        return max(1, math.ceil(self.epochs * rows / per_step))


@cache
def hyperparameters_for(method: str) -> type[Hyperparameters]:
    """`Hyperparameters` with `method`'s default learning rate (2e-4 for adapters, 2e-5 for full…)."""
    spec = get_spec(method)
    return create_model(  # type: ignore[call-overload, no-any-return]
        f"{method.capitalize()}Hyperparameters", __base__=Hyperparameters,
        learning_rate=(LearningRate, spec.learning_rate),
    )
