"""Hand a stored job to the queue. The message carries only the job id."""
from __future__ import annotations

import logging
from contextlib import nullcontext

from sqlalchemy import update
from sqlmodel import Session

from app.db import get_engine
from app.models import Job, utcnow
from app.queue import RUN_JOB_TASK, celery_client

log = logging.getLogger(__name__)


def enqueue_job(job_id: str, queue: str, session: Session | None = None) -> bool:
    """Publish after the row is committed; False (job stays queued for the reconciler) if Redis is down.

    A request passes its own session: opening a second one while the request's holds a connection
    would need two pooled connections per submission, and a burst of submissions then waits on
    itself until the pool times out."""
    client = celery_client()  # celery only; no torch
    try:
        client.send_task(RUN_JOB_TASK, args=[job_id], queue=queue, retry=False)
    except Exception as exc:  # noqa: BLE001 - any broker failure leaves the job queued in the database
        log.warning("could not enqueue job %s: %s (the reconciler will send it)", job_id, exc)
        return False
    with nullcontext(session) if session is not None else Session(get_engine()) as stamping:
        stamping.exec(update(Job).where(Job.id == job_id).values(enqueued_at=utcnow()))  # type: ignore[call-overload]
        stamping.commit()
    return True
