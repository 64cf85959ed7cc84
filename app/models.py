"""Database tables. The job row is the single source of truth for a job."""
from __future__ import annotations

from datetime import datetime, timezone
from enum import StrEnum
from typing import Any
from uuid import uuid4

from sqlalchemy import JSON, BigInteger, Column, Index, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from app.queue import CPU_QUEUE


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def as_utc(when: datetime) -> datetime:
    """A stored time made comparable with `utcnow()`: SQLite gives back naive datetimes, written in UTC."""
    return when if when.tzinfo is not None else when.replace(tzinfo=timezone.utc)


def new_id() -> str:
    return uuid4().hex


class User(SQLModel, table=True):
    id: str = Field(default_factory=new_id, primary_key=True, max_length=64)
    email: str = Field(max_length=320, unique=True, index=True)
    password_hash: str = Field(max_length=255)
    is_admin: bool = False
    created_at: datetime = Field(default_factory=utcnow)


class ApiToken(SQLModel, table=True):
    """Stored as a SHA-256 hash: the token itself is shown once, at creation."""

    __tablename__ = "api_token"

    id: str = Field(default_factory=new_id, primary_key=True, max_length=64)
    user_id: str = Field(max_length=64, foreign_key="user.id", index=True)
    name: str = Field(default="", max_length=100)
    token_hash: str = Field(max_length=64, unique=True, index=True)
    prefix: str = Field(max_length=16)
    created_at: datetime = Field(default_factory=utcnow)
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None


class LoginSession(SQLModel, table=True):
    """A browser login. The signed cookie names it; logging out or expiry ends it here, so a copied
    cookie stops working too (a signature alone cannot be taken back)."""

    __tablename__ = "login_session"

    id: str = Field(primary_key=True, max_length=64, description="random, the cookie's `sid`")
    user_id: str = Field(max_length=64, foreign_key="user.id", index=True)
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime = Field(index=True)
    ended_at: datetime | None = None


class Dataset(SQLModel, table=True):
    id: str = Field(default_factory=new_id, primary_key=True, max_length=64)
    owner_id: str | None = Field(default=None, max_length=64, index=True, description="None: shared (the demo)")
    name: str = Field(max_length=255)
    format: str = Field(max_length=32)
    rows: int
    size_bytes: int = Field(sa_column=Column(BigInteger, nullable=False))
    path: str = Field(description="Normalised JSONL, relative to the data dir")
    created_at: datetime = Field(default_factory=utcnow, index=True)


class JobStatus(StrEnum):
    """A job's status, as stored in `job.status` and sent in `status` events (a StrEnum: equal to its string)."""

    QUEUED = "queued"
    RUNNING = "running"
    CANCELLING = "cancelling"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    PAUSING = "pausing"  # stopping at a checkpoint on request; then paused
    PAUSED = "paused"  # stopped at a checkpoint; resuming continues from it


TERMINAL_STATUSES = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})
# A worker holds the job (its lease is renewed) while it is in one of these.
# Where a job's live event stream ends: the run is over, or paused (resuming opens a new stretch of events).
STREAM_END_STATUSES = TERMINAL_STATUSES | {JobStatus.PAUSED}
ACTIVE_STATUSES = (JobStatus.RUNNING, JobStatus.CANCELLING, JobStatus.PAUSING)
JOB_STATUSES = tuple(JobStatus)  # queued, running, cancelling, succeeded, failed, cancelled, pausing, paused


class Job(SQLModel, table=True):
    __table_args__ = (Index("ix_job_status_created", "status", "created_at"),)

    id: str = Field(default_factory=new_id, primary_key=True, max_length=64)
    owner_id: str | None = Field(default=None, max_length=64, index=True)
    name: str = Field(default="", max_length=255)
    model: str = Field(max_length=255)
    dataset_id: str = Field(max_length=64, index=True)
    method: str = Field(max_length=32, index=True)
    config: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    queue: str = Field(default=CPU_QUEUE, max_length=32)
    status: str = Field(default=JobStatus.QUEUED, max_length=16, index=True)
    step: int = 0
    total_steps: int = 0
    metrics: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    summary: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    error: str | None = Field(default=None, sa_column=Column(Text))
    artifact_path: str | None = None
    peak_memory_bytes: int | None = Field(default=None, sa_column=Column(BigInteger))
    attempt: int = 0
    worker: str | None = None
    cancel_requested: bool = False
    pause_requested: bool = Field(default=False, description="The stop asked for is a pause: it ends paused, not cancelled")
    api_extras: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False, server_default="{}"),
                                       description="What an API client gave beside the job's config (OpenAI's "
                                                   "metadata, suffix, method body)")
    lease_expires_at: datetime | None = Field(default=None, description="The running attempt's lease; past it, the worker is presumed dead")
    enqueued_at: datetime | None = None
    resume: bool = Field(default=True, description="Continue from the last checkpoint when there is one")
    plan: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    event_seq: int = Field(default=0, description="Last event sequence number allocated")
    created_at: datetime = Field(default_factory=utcnow, index=True)
    started_at: datetime | None = None
    finished_at: datetime | None = None


class JobEvent(SQLModel, table=True):
    """Every event a job emitted, so a page reopened later replays its full history."""

    __tablename__ = "job_event"
    __table_args__ = (UniqueConstraint("job_id", "seq", name="uq_job_event_seq"),)

    id: int | None = Field(default=None, primary_key=True)
    job_id: str = Field(max_length=64, foreign_key="job.id", index=True)
    seq: int
    kind: str = Field(max_length=16)
    data: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)


class CatalogGpu(SQLModel, table=True):
    """A GPU the planner prices plans on; seeded from app/planner/data/gpus.json, edited by an admin."""

    __tablename__ = "catalog_gpu"

    id: str = Field(primary_key=True, max_length=100, description="slug of the name")
    name: str = Field(max_length=100, unique=True)
    memory_bytes: int = Field(sa_column=Column(BigInteger, nullable=False))
    bf16_tflops: float
    price_per_hour: float
    utilisation: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    sources: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    calibration: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False, server_default="{}"),
                                        description="app.planner.catalog.GpuCalibration, from measured runs; {} if none")
    updated_at: datetime = Field(default_factory=utcnow)


class CatalogModel(SQLModel, table=True):
    """A model architecture by its config.json numbers; seeded from app/planner/data/models.json."""

    __tablename__ = "catalog_model"

    id: str = Field(primary_key=True, max_length=100)
    name: str = Field(max_length=255)
    source: str = Field(default="", max_length=1000)
    config: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    updated_at: datetime = Field(default_factory=utcnow)


class PlanRecord(SQLModel, table=True):
    """Every plan computed through the API or the page, so it can be reopened and compared."""

    __tablename__ = "plan_record"

    id: str = Field(default_factory=new_id, primary_key=True, max_length=64)
    owner_id: str | None = Field(default=None, max_length=64, index=True)
    label: str = Field(default="", max_length=255, description="model id, or the config's model_type")
    mode: str = Field(default="instant", max_length=16)
    request: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    result: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, index=True)


class ModelTrust(SQLModel, table=True):
    """A model an admin allowed to run its own code (`trust_remote_code`); no other model runs any."""

    __tablename__ = "model_trust"

    model_id: str = Field(primary_key=True, max_length=255, description="`demo`, a folder under DATA_DIR/models, or a hub id")
    granted_by: str | None = Field(default=None, max_length=64, description="the admin's user id")
    granted_at: datetime = Field(default_factory=utcnow)


class WebhookEndpoint(SQLModel, table=True):
    """Where a user wants to hear that their jobs ended (app/webhooks/)."""

    __tablename__ = "webhook_endpoint"

    id: str = Field(default_factory=new_id, primary_key=True, max_length=64)
    owner_id: str = Field(max_length=64, index=True)
    url: str = Field(max_length=2000)
    secret: str = Field(max_length=100, description="whsec_<base64 key>: signs every delivery (Standard Webhooks)")
    events: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    allow_local: bool = Field(default=False, description="An admin allowed loopback/link-local addresses")
    created_at: datetime = Field(default_factory=utcnow)


class WebhookDelivery(SQLModel, table=True):
    """One event for one endpoint, sent until it is answered 2xx or has used its attempts (the outbox)."""

    __tablename__ = "webhook_delivery"
    __table_args__ = (Index("ix_webhook_delivery_due", "status", "next_attempt_at"),)

    id: str = Field(primary_key=True, max_length=64, description="msg_<hex>: the webhook-id header, the same on retries")
    endpoint_id: str = Field(max_length=64, index=True)
    job_id: str = Field(max_length=64, index=True)
    event_type: str = Field(max_length=64)
    payload: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    status: str = Field(default="pending", max_length=16, description="pending | delivered | failed")
    attempts: int = 0
    next_attempt_at: datetime = Field(default_factory=utcnow)
    locked_until: datetime | None = Field(default=None, description="A sender holds it until then")
    last_status_code: int | None = None
    last_error: str | None = Field(default=None, sa_column=Column(Text))
    created_at: datetime = Field(default_factory=utcnow)
    delivered_at: datetime | None = None
