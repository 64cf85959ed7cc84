"""The database side of job events: the full history, and the job row it updates."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import update
from sqlmodel import Session, select

from app.events.kinds import EventKind
from app.models import Job, JobEvent, utcnow


def append_events(session: Session, job_id: str, events: Sequence[tuple[str, dict[str, Any]]]) -> list[JobEvent]:
    """Number and store events written outside a running worker (queued, cancelled before start)."""
    job = session.get(Job, job_id)
    if job is None:
        raise LookupError(job_id)
    rows = []
    for kind, data in events:
        job.event_seq += 1
        rows.append(JobEvent(job_id=job_id, seq=job.event_seq, kind=kind, data=data))
    session.add(job)
    session.add_all(rows)
    return rows


def store_batch(session: Session, job_id: str, events: Sequence[tuple[int, str, dict[str, Any]]]) -> None:
    """Persist events a worker already numbered, and fold their effect into the job row."""
    if not events:
        return
    session.add_all(JobEvent(job_id=job_id, seq=seq, kind=kind, data=data) for seq, kind, data in events)
    values: dict[str, Any] = {"event_seq": max(seq for seq, _, _ in events)}
    metrics = [data for _, kind, data in events if kind == EventKind.METRIC]
    if metrics:
        latest = metrics[-1]
        values["step"] = int(latest.get("step", 0))
        values["total_steps"] = int(latest.get("total", 0))
        values["metrics"] = {k: v for k, v in latest.items() if k not in {"total"}}
    session.exec(update(Job).where(Job.id == job_id).values(**values))  # type: ignore[call-overload]


def events_after(session: Session, job_id: str, after: int, limit: int = 500) -> list[JobEvent]:
    stmt = (
        select(JobEvent)
        .where(JobEvent.job_id == job_id, JobEvent.seq > after)
        .order_by(JobEvent.seq)  # type: ignore[arg-type]
        .limit(limit)
    )
    return list(session.exec(stmt))


def touch_finished(job: Job) -> None:
    job.finished_at = utcnow()
