"""Put lost jobs back on the queue. The database says what should be happening; this makes it so.

- A running job whose lease expired lost its worker (killed, machine gone):
  queue it again to resume from its last checkpoint, up to `max_attempts`.
- A queued job whose message may be gone (Redis restarted without its data,
  or the API could not reach Redis when the job was created) is sent again.
  Duplicate messages are harmless: the claim lets only one attempt run.

Every worker runs this loop; a short Redis lock lets one of them act per round.
"""
from __future__ import annotations

import logging
import threading
from datetime import timedelta

from redis import Redis
from sqlalchemy import or_, update
from sqlmodel import Session, select

from app.db import get_engine
from app.dispatch import enqueue_job
from app.events.store import append_events
from app.models import Job, utcnow
from app.settings import get_settings

log = logging.getLogger(__name__)

LOCK_KEY = "tunedeck:reconciler-lock"
EPOCH_KEY = "tunedeck:broker-epoch"  # vanishes when Redis loses its data


def _requeue_lost_running(session: Session) -> list[tuple[str, str]]:
    now = utcnow()
    settings = get_settings()
    lost = session.exec(select(Job).where(
        Job.status.in_(("running", "cancelling")), Job.lease_expires_at < now)).all()  # type: ignore[attr-defined, operator]
    requeued = []
    for job in lost:
        if job.cancel_requested or job.attempt >= settings.max_attempts:
            status = "cancelled" if job.cancel_requested else "failed"
            error = None if job.cancel_requested else f"worker lost (attempt {job.attempt} of {settings.max_attempts})"
            values = {"status": status, "error": error, "finished_at": now, "lease_expires_at": None}
            event = {"status": status, **({"error": error} if error else {})}
        else:
            values = {"status": "queued", "lease_expires_at": None, "resume": True}
            event = {"status": "queued", "retry": True, "resume": True, "reason": "worker lost"}
        changed = session.exec(update(Job).where(  # type: ignore[call-overload]
            Job.id == job.id, Job.attempt == job.attempt, Job.status == job.status).values(**values))
        if changed.rowcount == 1:
            append_events(session, job.id, [("status", event)])
            session.commit()
            if values["status"] == "queued":
                requeued.append((job.id, job.queue))
        else:
            session.rollback()
    return requeued


def _stale_queued(session: Session, everything: bool) -> list[tuple[str, str]]:
    cutoff = utcnow() - timedelta(seconds=get_settings().requeue_after_seconds)
    stmt = select(Job).where(Job.status == "queued", Job.cancel_requested.is_(False))  # type: ignore[attr-defined]
    if not everything:
        stmt = stmt.where(or_(Job.enqueued_at.is_(None), Job.enqueued_at < cutoff))  # type: ignore[union-attr, operator]
    return [(job.id, job.queue) for job in session.exec(stmt)]


def reconcile_once(redis: Redis) -> int:
    """One round; returns how many jobs were sent to the queue."""
    if not redis.set(LOCK_KEY, "1", nx=True, ex=max(int(get_settings().reconcile_seconds) - 1, 1)):
        return 0
    broker_lost = bool(redis.set(EPOCH_KEY, utcnow().isoformat(), nx=True))
    with Session(get_engine()) as session:
        to_send = _requeue_lost_running(session) + _stale_queued(session, everything=broker_lost)
    for job_id, queue in to_send:
        log.info("reconciler: enqueuing job %s on %s", job_id, queue)
        enqueue_job(job_id, queue)
    return len(to_send)


class Reconciler:
    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="reconciler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        redis = Redis.from_url(get_settings().resolved_redis_url, socket_timeout=5)
        while not self._stop.wait(get_settings().reconcile_seconds):
            try:
                reconcile_once(redis)
            except Exception as exc:  # noqa: BLE001 - Redis or the database away: next round
                log.warning("reconciler round failed: %s", exc)
