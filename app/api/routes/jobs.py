"""Jobs: create, list, read, cancel, download."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, HTTPException, Query, status
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from app.api.deps import CurrentUser, JobDep, SessionDep, StreamJobDep
from app.api.errors import field_error
from app.jobs.artifacts import artifact_zip
from app.jobs.crud import FieldError, cancel_job, create_job, list_jobs, pause_job, retry_job, to_public
from app.models import JOB_STATUSES
from app.schemas.jobs import JobCreate, JobPublic, JobsPublic

router = APIRouter(prefix="/jobs", tags=["jobs"])


@router.post("", status_code=status.HTTP_201_CREATED, response_model=JobPublic)
def post_job(body: Annotated[JobCreate, Body()], session: SessionDep, user: CurrentUser) -> JobPublic:
    """Validate the config against the model and dataset, store the job as `queued`, enqueue it."""
    try:
        job = create_job(session, body, user)
    except FieldError as exc:
        raise field_error(exc) from exc
    return to_public(job)


@router.get("", response_model=JobsPublic)
def get_jobs(
    session: SessionDep,
    user: CurrentUser,
    status_: Annotated[str | None, Query(alias="status", pattern="^(" + "|".join(JOB_STATUSES) + ")$")] = None,
    method: Annotated[str | None, Query(max_length=32)] = None,
    q: Annotated[str | None, Query(max_length=200)] = None,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> JobsPublic:
    """Jobs, newest first, filtered by status, method and name."""
    jobs, count = list_jobs(session, user, status=status_, method=method, search=q, offset=offset, limit=limit)
    return JobsPublic(data=[to_public(j) for j in jobs], count=count)


@router.get("/{job_id}", response_model=JobPublic)
def get_job(job: JobDep) -> JobPublic:
    """One job with its progress and latest metrics."""
    return to_public(job)


@router.post("/{job_id}/cancel", response_model=JobPublic)
def post_cancel(job: JobDep, session: SessionDep) -> JobPublic:
    """Cancel a queued job at once, or ask a running one to stop at its next step."""
    return to_public(cancel_job(session, job))


@router.post("/{job_id}/pause", response_model=JobPublic)
def post_pause(job: JobDep, session: SessionDep) -> JobPublic:
    """Pause: a queued job at once; a running one saves a checkpoint at its next step and ends `paused`."""
    if job.status not in ("queued", "running", "pausing", "paused"):
        raise HTTPException(409, detail=f"only a queued or running job can be paused (this one is {job.status})")
    return to_public(pause_job(session, job))


@router.post("/{job_id}/resume", response_model=JobPublic)
def post_resume(job: JobDep, session: SessionDep) -> JobPublic:
    """Queue a paused job again; it continues from the checkpoint it paused at."""
    if job.status != "paused":
        raise HTTPException(409, detail=f"only a paused job can be resumed (this one is {job.status})")
    resumed = retry_job(session, job)
    if resumed is None:
        raise HTTPException(409, detail="the job changed state meanwhile; reload it")
    return to_public(resumed)


@router.post("/{job_id}/retry", response_model=JobPublic)
def post_retry(
    job: JobDep, session: SessionDep,
    fresh: Annotated[bool, Query(description="Start over instead of resuming from the last checkpoint")] = False,
) -> JobPublic:
    """Queue a failed or cancelled job again, resuming from its last checkpoint when it has one."""
    retried = retry_job(session, job, fresh=fresh)
    if retried is None:
        raise HTTPException(409, detail=f"only failed or cancelled jobs can be retried (this one is {job.status})")
    return to_public(retried)


async def _download(job_id: str, job, kind: str) -> FileResponse:  # type: ignore[no-untyped-def]
    path = await run_in_threadpool(artifact_zip, job, kind)
    if path is None:
        raise HTTPException(404, detail=f"no {kind} download: the job has not succeeded or has no such artifact")
    return FileResponse(path, media_type="application/zip", filename=f"tunedeck-{job_id}-{kind}.zip")


@router.get("/{job_id}/adapter", response_class=FileResponse)
async def get_adapter(job: StreamJobDep) -> FileResponse:
    """The trained artifact as a zip: a PEFT folder, a bottleneck-adapter folder, or a model folder."""
    return await _download(job.id, job, "adapter")


@router.get("/{job_id}/merged", response_class=FileResponse)
async def get_merged(job: StreamJobDep) -> FileResponse:
    """LoRA, DoRA and QLoRA merged into the base weights, as a plain model folder (zip)."""
    return await _download(job.id, job, "merged")
