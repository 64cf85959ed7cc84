"""`/v1/fine_tuning/jobs`: create, list, retrieve, cancel, pause, resume, events, checkpoints (OpenAI's API).

Thin routes over `app.jobs.crud` (the same job rows, checks and queue as `/api/v1/jobs`) and the
mapping in `app.openai_compat.fine_tuning_objects`. Lists page newest first with `after` (an id) and
`limit`, answering `has_more`, as OpenAI does.
"""
from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import TypeAdapter, ValidationError
from sqlmodel import Session, select

from app import storage
from app.api.deps import CurrentUser, SessionDep
from app.api.errors import clean_loc
from app.auth.visibility import can_see
from app.jobs.checkpoints import CHECKPOINT_DIR, complete_checkpoints, describe
from app.jobs.crud import FieldError, cancel_job, create_job, pause_job, retry_job
from app.methods import METHODS
from app.models import Job, JobEvent, JobStatus, User
from app.openai_compat.errors import OpenAIError
from app.openai_compat.fine_tuning_objects import (FineTuningJobCreate, checkpoint_object, event_object, job_body,
                                                   job_object, param_for)
from app.schemas.jobs import JobCreate

router = APIRouter(prefix="/fine_tuning/jobs", tags=["openai"])
Limit = Annotated[int, Query(ge=1, le=100)]


def _job(session: Session, user: User, job_id: str) -> Job:
    job = session.get(Job, job_id) if len(job_id) <= 64 else None
    if job is None or not can_see(user, job.owner_id):
        raise OpenAIError(404, f"Could not find fine-tuning job {job_id}", param="fine_tuning_job_id",
                          code="fine_tuning_job_not_found")
    return job


def _page(items: list[Any], key: Any, after: str | None, limit: int) -> tuple[list[Any], bool]:
    if after is not None:
        keys = [key(i) for i in items]
        items = items[keys.index(after) + 1:] if after in keys else []
    return items[:limit], len(items) > limit


@router.post("")
def create(body: FineTuningJobCreate, session: SessionDep, user: CurrentUser) -> dict[str, Any]:
    """A supervised job on one of our models (LoRA unless `tunedeck.method` says otherwise)."""
    try:
        kind, _ = body.openai_hyperparameters()
    except ValueError as exc:
        raise OpenAIError(400, str(exc), param="hyperparameters") from None
    if kind == "reinforcement":
        raise OpenAIError(400, "method.type 'reinforcement' is not available on this server: use 'supervised' or "
                               "'dpo'", param="method.type", code="invalid_value")
    try:
        job_create = TypeAdapter(JobCreate).validate_python(job_body(body))
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = clean_loc(("body", *error.get("loc", ())), frozenset(METHODS))[1:]
        if not loc and "max_steps or epochs" in error.get("msg", ""):
            loc = ["hyperparameters", "epochs"]
        raise OpenAIError(400, f"{param_for(tuple(loc))}: {error.get('msg', 'invalid')}",
                          param=param_for(tuple(loc)), code="invalid_value") from None
    try:
        job = create_job(session, job_create, user)
    except FieldError as exc:
        raise OpenAIError(400, exc.message, param=param_for(tuple(exc.loc)), code="invalid_value") from None
    job.api_extras = {"method_type": kind, "metadata": body.metadata, "suffix": body.suffix}
    session.add(job)
    session.commit()
    session.refresh(job)
    return job_object(job)


def _metadata_filter(request: Request) -> dict[str, str]:
    """`metadata[key]=value` query parameters, as the SDK sends `metadata={"key": "value"}`."""
    return {k[len("metadata["):-1]: v for k, v in request.query_params.items()
            if k.startswith("metadata[") and k.endswith("]")}


@router.get("")
def list_jobs(request: Request, session: SessionDep, user: CurrentUser, after: str | None = None,
              limit: Limit = 20) -> dict[str, Any]:
    """Every job the caller may see, newest first (made here or through /api/v1)."""
    query = select(Job).order_by(Job.created_at.desc(), Job.id.desc())  # type: ignore[attr-defined]
    if not user.is_admin:
        query = query.where((Job.owner_id == user.id) | (Job.owner_id.is_(None)))  # type: ignore[union-attr]
    jobs = list(session.exec(query).all())
    wanted = _metadata_filter(request)
    if wanted:
        jobs = [j for j in jobs if all(((j.api_extras or {}).get("metadata") or {}).get(k) == v
                                       for k, v in wanted.items())]
    page, more = _page(jobs, lambda j: j.id, after, limit)
    return {"object": "list", "data": [job_object(j) for j in page], "has_more": more}


@router.get("/{job_id}")
def retrieve(job_id: str, session: SessionDep, user: CurrentUser) -> dict[str, Any]:
    return job_object(_job(session, user, job_id))


@router.post("/{job_id}/cancel")
def cancel(job_id: str, session: SessionDep, user: CurrentUser) -> dict[str, Any]:
    job = _job(session, user, job_id)
    if job.status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED):
        raise OpenAIError(400, f"Job {job_id} has already {job.status} and cannot be cancelled", param="fine_tuning_job_id")
    return job_object(cancel_job(session, job))


@router.post("/{job_id}/pause")
def pause(job_id: str, session: SessionDep, user: CurrentUser) -> dict[str, Any]:
    """Stop at a checkpoint (a queued job pauses before it starts); `resume` continues from it."""
    job = _job(session, user, job_id)
    if job.status not in (JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.PAUSING, JobStatus.PAUSED):
        raise OpenAIError(400, f"Job {job_id} is {job.status}: only a queued or running job can be paused",
                          param="fine_tuning_job_id")
    return job_object(pause_job(session, job))


@router.post("/{job_id}/resume")
def resume(job_id: str, session: SessionDep, user: CurrentUser) -> dict[str, Any]:
    job = _job(session, user, job_id)
    resumed = retry_job(session, job) if job.status == JobStatus.PAUSED else None
    if resumed is None:
        raise OpenAIError(400, f"Job {job_id} is {job.status}: only a paused job can be resumed",
                          param="fine_tuning_job_id")
    return job_object(resumed)


@router.get("/{job_id}/events")
def events(job_id: str, session: SessionDep, user: CurrentUser, after: str | None = None,
           limit: Limit = 20) -> dict[str, Any]:
    """The job's events, newest first: status changes and log lines as `message`, metric points as `metrics`."""
    job = _job(session, user, job_id)
    rows = list(session.exec(select(JobEvent).where(JobEvent.job_id == job.id)
                             .order_by(JobEvent.seq.desc())).all())  # type: ignore[attr-defined]
    objects = [event_object(job, e) for e in rows]
    page, more = _page(objects, lambda e: e["id"], after, limit)
    return {"object": "list", "data": page, "has_more": more}


@router.get("/{job_id}/checkpoints")
def checkpoints(job_id: str, session: SessionDep, user: CurrentUser, after: str | None = None,
                limit: Limit = 10) -> dict[str, Any]:
    """The job's complete checkpoints, newest first, with the training and validation loss at their step."""
    job = _job(session, user, job_id)
    metrics = {e.data.get("step"): e.data for e in session.exec(
        select(JobEvent).where(JobEvent.job_id == job.id, JobEvent.kind == "metric")).all()}
    found = []
    for path in reversed(complete_checkpoints(storage.job_dir(job.id) / CHECKPOINT_DIR)):
        info = describe(path)
        point = metrics.get(info["step"]) or {}
        created = int(path.stat().st_mtime)
        found.append(checkpoint_object(job, info["step"], created, point.get("loss", info.get("loss")),
                                       point.get("eval_loss")))
    page, more = _page(found, lambda c: c["id"], after, limit)
    return {"object": "list", "data": page, "has_more": more,
            "first_id": page[0]["id"] if page else None, "last_id": page[-1]["id"] if page else None}
