"""Plan request and response bodies (`POST /api/v1/plan`, `POST /api/v1/plan/fit`).

Why the method options are a plain dict here: one plan compares several
methods, each with its own options model (`app.methods`); the service
validates `method_config.<method>` with that model so a wrong option is a 422
at `body.method_config.<method>.<field>`, as in the job form. Defaults and
bounds of the training shape (seq_len, micro-batch, accumulation) are the
job's own (`app.schemas.hyperparameters`).
"""
from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.methods import METHODS
from app.schemas.hyperparameters import (
    BATCH_SIZE,
    GRADIENT_ACCUMULATION,
    SEQ_LEN,
    BatchSize,
    GradientAccumulation,
    SeqLen,
)

MethodName = Literal[METHODS]  # type: ignore[valid-type]


class PlanRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(None, min_length=1, max_length=200,
                              description="A catalog id (GET /api/v1/plan/catalog), a model folder or a hub id")
    config: dict[str, Any] | None = Field(None, description="A config.json, instead of `model`")
    methods: list[MethodName] = Field(default_factory=lambda: list(METHODS), min_length=1, max_length=len(METHODS))
    seq_len: SeqLen = SEQ_LEN
    batch_size: BatchSize = BATCH_SIZE
    gradient_accumulation: GradientAccumulation = GRADIENT_ACCUMULATION
    gradient_checkpointing: bool = False
    precision: Literal["bf16", "mixed", "fp32"] = Field(
        "bf16", description="bf16 weights; mixed = fp32 weights under bf16 autocast; fp32")
    optimizer: Literal["adamw", "adamw_8bit", "paged_adamw_8bit", "sgd", "adafactor"] | None = Field(
        None, description="Default: the method's own (AdamW; QLoRA: paged 8-bit AdamW)")
    method_config: dict[MethodName, dict[str, Any]] = Field(default_factory=dict)
    dataset_tokens: int | None = Field(None, ge=1, le=10**13, description="Tokens in one epoch")
    dataset: str | None = Field(None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$",
                                description="A stored dataset id, instead of dataset_tokens")
    epochs: float = Field(1.0, gt=0, le=100)
    gpus: list[str] | None = Field(None, min_length=1, max_length=64, description="GPU names; default: all")
    mode: Literal["instant", "traced"] = "instant"
    objective: Literal["sft", "dpo"] = Field(
        "sft", description="sft; or dpo: two sequences per example, a reference forward (and, for full and freeze, "
                           "a frozen reference copy); default methods then those that take it")

    @model_validator(mode="after")
    def _one_of_each(self) -> "PlanRequest":
        if self.objective == "dpo" and self.mode == "traced":
            raise ValueError("objective dpo is planned in instant mode only: the traced step is a supervised one")
        if self.objective == "dpo" and "methods" not in self.model_fields_set:
            from app.methods import get_spec

            self.methods = [m for m in METHODS if get_spec(m).dpo_reference is not None]
        if (self.model is None) == (self.config is None):
            raise ValueError("give exactly one of model or config")
        if self.dataset is not None and self.dataset_tokens is not None:
            raise ValueError("give either dataset or dataset_tokens, not both")
        if len(set(self.methods)) != len(self.methods):
            raise ValueError("methods lists a method twice")
        return self


class FitRequest(PlanRequest):
    """Make it fit: one method on one GPU; batch_size × gradient_accumulation is kept exactly."""

    methods: list[MethodName] = Field(min_length=1, max_length=1)
    gpus: list[str] = Field(min_length=1, max_length=1)  # type: ignore[assignment]
    mode: Literal["instant"] = "instant"
    allow_shorter_seq_len: bool = Field(False, description="May it shorten seq_len when nothing else fits "
                                                           "(that changes what trains, so only on request)")


class FitResponse(BaseModel):
    """Make it fit's answer: the configuration chosen (or the leanest one tried) and what it changed."""

    method: str
    gpu: str
    fits: bool
    batch_size: int
    gradient_accumulation: int
    gradient_checkpointing: bool
    optimizer: str
    seq_len: int
    max_batch_size: int = Field(description="The largest micro-batch that fits this choice at any accumulation")
    peak_bytes: int
    usable_bytes: int = Field(description="The GPU's memory less the fit margin")
    over_bytes: int = Field(description="How far the leanest configuration misses (0 when it fits)")
    seconds_per_step: float
    cost_per_step: float
    changes: list[str] = Field(description="What differs from the request, in words")
    reason: str = Field(description="When nothing fits: by how much, with what, and what would fit instead")


class GpuEstimate(BaseModel):
    name: str
    fits: bool
    headroom_bytes: int
    seconds: float
    cost: float


class Breakdown(BaseModel):
    weights: int
    trainable_weights: int
    gradients: int
    optimizer: int
    activations: int
    logits: int
    runtime_overhead: int


class MethodEstimate(BaseModel):
    method: str
    peak_bytes: int
    breakdown: Breakdown
    peak_phase: str
    trainable_params: int
    total_params: int
    flops_per_step: int
    steps: int | None
    gpus: list[GpuEstimate]
    notes: list[str]
    mode: Literal["instant", "traced"] = "instant"
    not_applied: list[str] = Field(default_factory=list, description=(
        "Settings of the request this method could not take, and what it was estimated with instead; "
        "such a method is left out of the badges (`badges.not_ranked`)"))
    recipe: str | None = Field(None, description="The precision recipe assumed (e.g. pure bf16 vs fp32 master weights)")


class PlanResponse(BaseModel):
    id: str | None = Field(None, description="The stored plan (GET /api/v1/plans/{id})")
    model: str | None
    estimates: list[MethodEstimate]
    badges: dict[str, Any]
    dataset_tokens: int | None
    dataset_lengths: dict[str, Any] | None = Field(
        None, description="With a stored dataset: its rows' token lengths, histogram, truncated and dropped rows")


class PlanSummary(BaseModel):
    id: str
    owner_id: str | None = None
    owner_email: str | None = Field(None, description="Only in an admin's all-users list")
    label: str
    mode: str
    created_at: datetime
    methods: list[str] | None
    seq_len: int | None
    batch_size: int | None
    badges: dict[str, Any]


class PlansPublic(BaseModel):
    data: list[PlanSummary]
    count: int


class StoredPlan(BaseModel):
    id: str
    label: str
    mode: str
    created_at: datetime
    request: dict[str, Any]
    result: PlanResponse
