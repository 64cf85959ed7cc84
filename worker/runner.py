"""One attempt at one job: claim it, run the trainer, record the outcome.

Delivery is at-least-once, so the claim is a conditional UPDATE: a second
delivery of a job that is already running or finished changes nothing and
exits without training.
"""
from __future__ import annotations

import json
import logging
import signal
from pathlib import Path
from typing import Any

from redis import Redis
from sqlalchemy import update
from sqlmodel import Session, select

from app import storage
from app.catalog.models import resolve_model_path
from app.db import get_engine
from app.events.kinds import EventKind
from app.models import Dataset, Job, JobEvent, JobStatus, utcnow
from app.settings import get_settings
from worker.lease import LeaseKeeper, lease_until
from worker.relay import EventRelay
from worker.supervisor import TrainerOutcome, run_trainer
from worker.train.stop import STOPPED_EXIT

log = logging.getLogger(__name__)


def claim(job_id: str, worker: str) -> Job | None:
    with Session(get_engine()) as session:
        result = session.exec(  # type: ignore[call-overload]
            update(Job)
            .where(Job.id == job_id, Job.status == JobStatus.QUEUED, Job.cancel_requested.is_(False))  # type: ignore[attr-defined]
            .values(status=JobStatus.RUNNING, attempt=Job.attempt + 1, worker=worker, started_at=utcnow(), error=None,
                    lease_expires_at=lease_until())
        )
        session.commit()
        if result.rowcount != 1:
            return None
        return session.get(Job, job_id)


def cancel_requested(job_id: str) -> bool | str:
    """Whether the job was asked to stop: `pausing` when the stop is a pause, True for a cancel."""
    with Session(get_engine()) as session:
        job = session.get(Job, job_id)
        if job is None or not job.cancel_requested:
            return False
        return JobStatus.PAUSING if job.pause_requested else True


def pause_requested(job_id: str) -> bool:
    """The stop was a pause: the job ends paused (resumable from its checkpoint), not cancelled."""
    with Session(get_engine()) as session:
        job = session.get(Job, job_id)
        return bool(job and job.pause_requested)


def write_spec(job: Job) -> tuple[Path, Path]:
    with Session(get_engine()) as session:
        dataset = session.get(Dataset, job.dataset_id)
        if dataset is None:
            raise LookupError(f"dataset {job.dataset_id} no longer exists")
        dataset_path = storage.absolute(dataset.path)
        held = job.config.get("validation_dataset")
        validation = session.get(Dataset, held) if held else None
        if held and validation is None:
            raise LookupError(f"validation dataset {held} no longer exists")
        recorded = recorded_checkpoint(session, job.id) if job.resume else None
    directory = storage.job_dir(job.id)
    directory.mkdir(parents=True, exist_ok=True)
    if not job.resume:
        storage.remove_tree(directory / "checkpoints")  # a fresh retry must not pick up old state
    output_dir = directory / "artifact"
    spec = {
        "job_id": job.id,
        "model_path": resolve_model_path(job.model),
        "dataset_path": str(dataset_path),
        "validation_path": str(storage.absolute(validation.path)) if validation is not None else None,
        "output_dir": str(output_dir),
        "merged_dir": str(directory / "merged"),
        "checkpoint_dir": str(directory / "checkpoints"),
        "resume": job.resume,
        "resume_through": recorded,
        "config": job.config,
    }
    spec_path = directory / "spec.json"
    spec_path.write_text(json.dumps(spec, indent=2))
    if not job.resume:
        _resume_from_now_on(job)
    return spec_path, output_dir


def recorded_checkpoint(session: Session, job_id: str) -> int | None:
    """The newest checkpoint the job's stored history announces. A trainer whose worker was
    killed can finish a checkpoint whose event (and the metrics before it) never reached the
    database; resuming from that one would leave steps missing from the history."""
    rows = session.exec(select(JobEvent.data).where(JobEvent.job_id == job_id, JobEvent.kind == EventKind.LOG))
    steps = [d["checkpoint"]["step"] for d in rows if isinstance(d.get("checkpoint"), dict)]
    return max(steps, default=None)


def _resume_from_now_on(job: Job) -> None:
    """A fresh start (retry with `fresh`) is fresh once: should this attempt die, the next
    delivery (the reconciler's re-queue, a plain retry) resumes from this run's checkpoints
    instead of deleting them and starting over again. Only while this attempt owns the job."""
    with Session(get_engine()) as session:
        session.exec(  # type: ignore[call-overload]
            update(Job).where(Job.id == job.id, Job.attempt == job.attempt).values(resume=True)
        )
        session.commit()


def describe_exit(outcome: TrainerOutcome) -> str:
    if outcome.error:
        return outcome.error
    if outcome.returncode == STOPPED_EXIT:
        # SIGTERM from something other than our cancel (a shutdown): it saved a checkpoint first.
        return "training process stopped by SIGTERM after a checkpoint; retry to resume it"
    if outcome.returncode < 0:
        name = signal.Signals(-outcome.returncode).name
        hint = " (out of memory?)" if name == "SIGKILL" else ""
        return f"training process killed by {name}{hint}"
    return f"training process exited with code {outcome.returncode}"


def run_job(job_id: str, worker: str) -> str:
    job = claim(job_id, worker)
    if job is None:
        log.info("job %s: not claimable (duplicate delivery, cancelled or finished)", job_id)
        return "skipped"
    redis = Redis.from_url(get_settings().resolved_redis_url, socket_timeout=5)
    relay = EventRelay(job_id, job.event_seq, redis)
    relay.emit(EventKind.STATUS, {"status": JobStatus.RUNNING, "worker": worker, "attempt": job.attempt})
    final: dict[str, Any]
    try:
        spec_path, output_dir = write_spec(job)
        relay.emit(EventKind.LOG, {"message": f"Attempt {job.attempt} on {worker}"})
        with LeaseKeeper(job_id, job.attempt) as lease:
            outcome = run_trainer(
                spec_path, relay.emit, lambda: lease.lost.is_set() or cancel_requested(job_id),
                get_settings().cancel_grace_seconds,
            )
        if lease.lost.is_set():
            log.warning("job %s: attempt %s superseded by another attempt", job_id, job.attempt)
            relay.close()
            return "superseded"
        final = _final_values(job_id, outcome, output_dir)
    except Exception as exc:  # noqa: BLE001 - whatever happens, the job ends with a status and a reason
        log.exception("job %s failed before training", job_id)
        final = {"status": JobStatus.FAILED, "error": str(exc) or type(exc).__name__}
    final["finished_at"] = utcnow()
    final["lease_expires_at"] = None
    event = {"status": final["status"]}
    if final.get("error"):
        event["error"] = final["error"]
    relay.finish(EventKind.STATUS, event, final, job.attempt)
    return str(final["status"])  # a plain string: Celery logs the task's result by its repr


def _final_values(job_id: str, outcome: TrainerOutcome, output_dir: Path) -> dict[str, Any]:
    values: dict[str, Any] = {"summary": outcome.summary}
    if outcome.summary.get("peak_memory_bytes") is not None:
        values["peak_memory_bytes"] = int(outcome.summary["peak_memory_bytes"])
    if outcome.cancelled:
        values["status"] = JobStatus.PAUSED if pause_requested(job_id) else JobStatus.CANCELLED
    elif outcome.returncode == 0 and output_dir.is_dir():
        values["status"] = JobStatus.SUCCEEDED
        values["artifact_path"] = storage.relative(output_dir)
    else:
        values["status"] = JobStatus.FAILED
        values["error"] = describe_exit(outcome)
    return values
