"""Job request and response bodies."""
from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, computed_field, create_model, model_validator

from app.methods import REGISTRY, MethodOptions
from app.schemas.hyperparameters import Hyperparameters, hyperparameters_for

ModelRef = Annotated[
    str,
    Field(
        min_length=1,
        max_length=200,
        pattern=r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$",
        description="`demo`, a folder name under DATA_DIR/models, or a hub id `org/name`",
    ),
]


DatasetRef = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]


class JobBase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field("", max_length=200)
    model: ModelRef
    dataset: DatasetRef
    validation_dataset: DatasetRef | None = Field(
        None, description="A dataset of its own to evaluate on (instead of rows held out of `dataset`)")
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)

    @model_validator(mode="after")
    def _evaluation_rows(self) -> "JobBase":
        hp = self.hyperparameters
        if self.validation_dataset is not None and hp.holds_out:
            raise ValueError("give either validation_dataset or eval_fraction/eval_count, not both")
        if hp.eval_every and not hp.holds_out and self.validation_dataset is None:
            raise ValueError("eval_every needs held-out rows: set eval_fraction or eval_count, or a "
                             "validation_dataset")
        return self


class MethodJobCreate(JobBase):
    """What every per-method job body has; `method` and `method_config` are typed per method."""

    method: str
    method_config: MethodOptions


def _job_model(method: str, options: type[MethodOptions]) -> type[MethodJobCreate]:
    """One body per method: its options model, and its own default learning rate in the schema."""
    hyperparameters = hyperparameters_for(method)
    return create_model(  # type: ignore[call-overload, no-any-return]
        f"{method.capitalize()}JobCreate",
        __base__=MethodJobCreate,
        method=(Literal[method], ...),  # type: ignore[valid-type]
        hyperparameters=(hyperparameters, Field(default_factory=hyperparameters)),
        method_config=(options, Field(default_factory=options)),
    )


JOB_MODELS: tuple[type[MethodJobCreate], ...] = tuple(_job_model(m, s.options) for m, s in REGISTRY.items())
JobCreate = Annotated[Union[JOB_MODELS], Field(discriminator="method")]  # type: ignore[valid-type]


class Progress(BaseModel):
    step: int
    total: int


class JobPublic(BaseModel):
    id: str
    name: str
    status: str
    model: str
    dataset: str
    method: str
    queue: str
    hyperparameters: dict[str, Any]
    method_config: dict[str, Any]
    progress: Progress
    metrics: dict[str, Any]
    summary: dict[str, Any]
    error: str | None
    attempt: int
    worker: str | None
    peak_memory_bytes: int | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    downloads: dict[str, str]
    plan: dict[str, Any] | None = Field(None, description="The planner's instant estimate stored at submission")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def measured(self) -> dict[str, Any] | None:
        """What the run measured (peak memory and its kind, tokens/s), beside `plan`."""
        from app.planner.job_plan import job_measured

        return job_measured(self)


class JobsPublic(BaseModel):
    data: list[JobPublic]
    count: int
