"""A job's full history: every metric point, every sample, every checkpoint."""
from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path as PathParam
from fastapi.responses import FileResponse
from sqlmodel import select
from starlette.concurrency import run_in_threadpool

from app import storage
from app.api.deps import JobDep, SessionDep
from app.jobs.checkpoints import CHECKPOINT_DIR, complete_checkpoints, describe
from app.jobs.artifacts import zip_folder
from app.models import JobEvent

router = APIRouter(prefix="/jobs", tags=["jobs"])


def _events(session: SessionDep, job_id: str, kind: str) -> list[JobEvent]:
    stmt = select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.kind == kind).order_by(JobEvent.seq)  # type: ignore[arg-type]
    return list(session.exec(stmt))


@router.get("/{job_id}/metrics")
def get_metrics(job: JobDep, session: SessionDep) -> dict[str, Any]:
    """Every metric point in step order (training loss, learning rate, eval loss at eval steps…)."""
    points = [e.data for e in _events(session, job.id, "metric")]
    return {"data": points, "count": len(points)}


@router.get("/{job_id}/samples")
def get_samples(job: JobDep, session: SessionDep) -> dict[str, Any]:
    """Generations from held-out prompts, as the model learned."""
    samples = [e.data["sample"] for e in _events(session, job.id, "log") if isinstance(e.data.get("sample"), dict)]
    return {"data": samples, "count": len(samples)}


@router.get("/{job_id}/checkpoints")
def get_checkpoints(job: JobDep) -> dict[str, Any]:
    """Complete checkpoints, oldest first, each with its download link."""
    folder = storage.job_dir(job.id) / CHECKPOINT_DIR
    items = []
    for path in complete_checkpoints(folder):
        item = describe(path)
        item["download"] = f"/api/v1/jobs/{job.id}/checkpoints/{item['name']}"
        items.append(item)
    return {"data": items, "count": len(items)}


@router.get("/{job_id}/checkpoints/{name}", response_class=FileResponse)
async def get_checkpoint(
    job: JobDep, name: Annotated[str, PathParam(pattern=r"^checkpoint-\d{1,9}$")]
) -> FileResponse:
    """One checkpoint folder as a zip (weights and resume state)."""
    root = storage.job_dir(job.id) / CHECKPOINT_DIR
    match = [p for p in complete_checkpoints(root) if p.name == name]
    safe = storage.inside_data_dir(match[0]) if match else None
    if safe is None or storage.inside_data_dir(storage.job_dir(job.id)) not in safe.parents:
        raise HTTPException(404, detail="no such checkpoint")
    path = await run_in_threadpool(zip_folder, safe, safe.parent / f"{name}.zip")
    return FileResponse(path, media_type="application/zip", filename=f"tunedeck-{job.id}-{name}.zip")
