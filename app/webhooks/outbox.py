"""Deliveries are written in the same transaction as the job's end: a crash or a restart between the two
cannot lose one (the sender, app/webhooks/sender.py, reads them back from the database)."""
from __future__ import annotations

import time
from typing import Any

from sqlmodel import Session, select

from app.models import Job, JobStatus, WebhookDelivery, WebhookEndpoint, new_id

EVENTS = {JobStatus.SUCCEEDED: "fine_tuning.job.succeeded", JobStatus.FAILED: "fine_tuning.job.failed",
          JobStatus.CANCELLED: "fine_tuning.job.cancelled"}
EVENT_TYPES = tuple(EVENTS.values())


def payload(job: Job, event_type: str, message_id: str) -> dict[str, Any]:
    """OpenAI's webhook event shape (`data.id` is the job), with ours beside it."""
    status = event_type.rsplit(".", 1)[1]
    return {"id": f"evt_{message_id.removeprefix('msg_')}", "object": "event", "type": event_type,
            "created_at": int(time.time()), "data": {"id": job.id},
            "tunedeck": {"status": status, "model": job.model, "method": job.method, "error": job.error,
                         "fine_tuned_model": f"ft:{job.model}:{job.id}" if status == "succeeded" else None}}


def record_job_end(session: Session, job_id: str, status: str) -> int:
    """Queue one delivery per endpoint of the job's owner that listens for how it ended (`status`; not
    committed: the caller commits it with the job's final state). Returns how many."""
    job = session.get(Job, job_id)
    event_type = EVENTS.get(JobStatus(status)) if status in EVENTS else None
    if job is None or event_type is None or job.owner_id is None:
        return 0
    endpoints = session.exec(select(WebhookEndpoint).where(WebhookEndpoint.owner_id == job.owner_id)).all()
    count = 0
    for endpoint in endpoints:
        if event_type in endpoint.events:
            message_id = f"msg_{new_id()}"
            session.add(WebhookDelivery(id=message_id, endpoint_id=endpoint.id, job_id=job.id, event_type=event_type,
                                        payload=payload(job, event_type, message_id)))
            count += 1
    return count
