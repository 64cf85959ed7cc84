"""Hand a stored job to the queue. The message carries only the job id."""
from __future__ import annotations

import logging

log = logging.getLogger(__name__)

RUN_JOB_TASK = "tunedeck.run_job"


def enqueue_job(job_id: str, queue: str) -> bool:
    """Publish after the row is committed; False (job stays queued for the reconciler) if Redis is down."""
    from worker.celery_app import celery_app  # celery only; no torch

    try:
        celery_app.send_task(RUN_JOB_TASK, args=[job_id], queue=queue, retry=False)
    except Exception as exc:  # noqa: BLE001 - any broker failure leaves the job queued in the database
        log.warning("could not enqueue job %s: %s", job_id, exc)
        return False
    return True
