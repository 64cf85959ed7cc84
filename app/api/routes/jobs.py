"""Jobs: create, list, read, cancel, download."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, HTTPException, Query, status
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from app.api.deps import JobDep, SessionDep
from app.api.errors import field_error
from app.jobs.artifacts import adapter_zip
from app.jobs.crud import FieldError, cancel_job, create_job, list_jobs, to_public
from app.models import JOB_STATUSES
from app.schemas.jobs import JobCreate, JobPublic, JobsPublic

router = APIRouter(prefix="/jobs", tags=["jobs"])


@router.post("", status_code=status.HTTP_201_CREATED, response_model=JobPublic)
def post_job(body: Annotated[JobCreate, Body()], session: SessionDep) -> JobPublic:
    """Validate the config against the model and dataset, store the job as `queued`, enqueue it."""
    try:
        job = create_job(session, body)
    except FieldError as exc:
        raise field_error(exc) from exc
    return to_public(job)


@router.get("", response_model=JobsPublic)
def get_jobs(
    session: SessionDep,
    status_: Annotated[str | None, Query(alias="status", pattern="^(" + "|".join(JOB_STATUSES) + ")$")] = None,
    method: Annotated[str | None, Query(max_length=32)] = None,
    q: Annotated[str | None, Query(max_length=200)] = None,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> JobsPublic:
    """Jobs, newest first, filtered by status, method and name."""
    jobs, count = list_jobs(session, status=status_, method=method, search=q, offset=offset, limit=limit)
    return JobsPublic(data=[to_public(j) for j in jobs], count=count)


@router.get("/{job_id}", response_model=JobPublic)
def get_job(job: JobDep) -> JobPublic:
    """One job with its progress and latest metrics."""
    return to_public(job)


@router.post("/{job_id}/cancel", response_model=JobPublic)
def post_cancel(job: JobDep, session: SessionDep) -> JobPublic:
    """Cancel a queued job at once, or ask a running one to stop at its next step."""
    return to_public(cancel_job(session, job))


@router.get("/{job_id}/adapter", response_class=FileResponse)
async def get_adapter(job: JobDep) -> FileResponse:
    """The trained adapter as a zip of the folder `peft` loads (404 until the job succeeded)."""
    if job.status != "succeeded" or not job.artifact_path:
        raise HTTPException(404, detail="no adapter: the job has not succeeded")
    path = await run_in_threadpool(adapter_zip, job)
    if path is None:
        raise HTTPException(404, detail="adapter files are missing")
    return FileResponse(path, media_type="application/zip", filename=f"tunedeck-{job.id}-adapter.zip")
