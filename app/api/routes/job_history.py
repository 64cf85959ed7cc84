"""A job's full history: every metric point, every sample, every checkpoint."""
from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException
from fastapi import Path as PathParam
from fastapi.responses import FileResponse
from sqlmodel import select
from starlette.concurrency import run_in_threadpool

from app import storage
from app.api.deps import JobDep, SessionDep, StreamJobDep
from app.events.kinds import EventKind
from app.jobs.artifacts import zip_folder
from app.jobs.checkpoints import CHECKPOINT_DIR, complete_checkpoints, describe
from app.models import JobEvent

router = APIRouter(prefix="/jobs", tags=["jobs"])


def _events(session: SessionDep, job_id: str, kind: str) -> list[JobEvent]:
    stmt = select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.kind == kind).order_by(JobEvent.seq)  # type: ignore[arg-type]
    return list(session.exec(stmt))


def current_run(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The points of the run as it stands, in emission order.

    A retry that resumes from checkpoint-N re-runs the steps after N that
    the killed attempt had already reported; a fresh retry starts again at
    step 1. Either way, a point whose step is not past the previous one
    means a restart, and the earlier points from that step on are replaced
    by the new ones: one line without repeats, with the `resumed` marker
    where it continued.
    """
    kept: list[dict[str, Any]] = []
    for point in points:
        step = point.get("step")
        if isinstance(step, int) and kept and isinstance(kept[-1].get("step"), int) and step <= kept[-1]["step"]:
            kept = [p for p in kept if not (isinstance(p.get("step"), int) and p["step"] >= step)]
        kept.append(point)
    return kept


@router.get("/{job_id}/metrics")
def get_metrics(job: JobDep, session: SessionDep) -> dict[str, Any]:
    """Every metric point of the current run in step order (training loss, learning rate, eval loss at
    eval steps, memory, elapsed time…); points re-run after a resume replace the earlier ones."""
    points = current_run([e.data for e in _events(session, job.id, EventKind.METRIC)])
    return {"data": points, "count": len(points)}


@router.get("/{job_id}/samples")
def get_samples(job: JobDep, session: SessionDep) -> dict[str, Any]:
    """Generations from held-out prompts, as the model learned (re-run steps replaced, as for metrics)."""
    samples = current_samples([e.data for e in _events(session, job.id, EventKind.LOG)])
    return {"data": samples, "count": len(samples)}


def current_samples(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The samples of the run as it stands. Several samples share a step, so a restart is
    read from the trainer's `resumed_from` log (drop what came after that step) or from a
    step below the last one seen (a fresh start)."""
    kept: list[dict[str, Any]] = []
    for data in logs:
        resumed_from = data.get("resumed_from")
        if isinstance(resumed_from, int):
            kept = [s for s in kept if not (isinstance(s.get("step"), int) and s["step"] > resumed_from)]
        sample = data.get("sample")
        if not isinstance(sample, dict):
            continue
        step, last = sample.get("step"), kept[-1].get("step") if kept else None
        if isinstance(step, int) and isinstance(last, int) and step < last:
            kept = [s for s in kept if not (isinstance(s.get("step"), int) and s["step"] >= step)]
        kept.append(sample)
    return kept


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
    job: StreamJobDep, name: Annotated[str, PathParam(pattern=r"^checkpoint-\d{1,9}$")]
) -> FileResponse:
    """One checkpoint folder as a zip (weights and resume state)."""
    root = storage.job_dir(job.id) / CHECKPOINT_DIR
    match = [p for p in complete_checkpoints(root) if p.name == name]
    safe = storage.inside_data_dir(match[0]) if match else None
    if safe is None or storage.inside_data_dir(storage.job_dir(job.id)) not in safe.parents:
        raise HTTPException(404, detail="no such checkpoint")
    path = await run_in_threadpool(zip_folder, safe, safe.parent / f"{name}.zip")
    return FileResponse(path, media_type="application/zip", filename=f"tunedeck-{job.id}-{name}.zip")
