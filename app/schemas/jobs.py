"""Job request and response bodies."""
from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field

from app.schemas.hyperparameters import Hyperparameters
from app.schemas.methods import LoraOptions

ModelRef = Annotated[
    str,
    Field(
        min_length=1,
        max_length=200,
        pattern=r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$",
        description="`demo`, a folder name under DATA_DIR/models, or a hub id `org/name`",
    ),
]


class JobBase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field("", max_length=200)
    model: ModelRef
    dataset: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)


class LoraJobCreate(JobBase):
    method: Literal["lora"]
    method_config: LoraOptions = Field(default_factory=LoraOptions)


JobCreate = Annotated[Union[LoraJobCreate], Field(discriminator="method")]


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


class JobsPublic(BaseModel):
    data: list[JobPublic]
    count: int
