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
from app.events.kinds import EventKind
from app.events.store import append_events, store_batch
from app.events.stream import parse_entry, publish, stream_key
from app.webhooks.outbox import record_job_end
from app.models import ACTIVE_STATUSES, Job, JobStatus, utcnow
from app.settings import get_settings
from worker.fork_guard import no_fork_inside

log = logging.getLogger(__name__)

LOCK_KEY = "tunedeck:reconciler-lock"
EPOCH_KEY = "tunedeck:broker-epoch"  # vanishes when Redis loses its data


def _salvage_live_events(session: Session, redis: Redis, job: Job) -> None:
    """Store what the dead attempt published live but never flushed to the database.

    Watchers saw those events under their sequence numbers; storing them keeps the
    history equal to what was shown, and makes the next event number come after
    them, so no number is ever given to two different events.
    """
    entries = redis.xrange(stream_key(job.id), min=f"0-{job.event_seq + 1}", max="+")
    batch, expected = [], job.event_seq + 1
    for entry_id, fields in entries:
        seq, kind, data = parse_entry(entry_id, fields)
        if seq != expected:
            break
        batch.append((seq, kind, data))
        expected += 1
    if batch:
        store_batch(session, job.id, batch)
        session.flush()
        session.expire(job)


def _requeue_lost_running(session: Session, redis: Redis) -> list[tuple[str, str]]:
    now = utcnow()
    settings = get_settings()
    lost = session.exec(select(Job).where(
        Job.status.in_(ACTIVE_STATUSES), Job.lease_expires_at < now)).all()  # type: ignore[attr-defined, operator]
    requeued = []
    for job in lost:
        job_id, attempt, status = job.id, job.attempt, job.status
        if job.cancel_requested or attempt >= settings.max_attempts:
            stopped = JobStatus.PAUSED if job.pause_requested else JobStatus.CANCELLED
            final = stopped if job.cancel_requested else JobStatus.FAILED
            error = None if job.cancel_requested else f"worker lost (attempt {attempt} of {settings.max_attempts})"
            values = {"status": final, "error": error, "finished_at": now, "lease_expires_at": None}
            event = {"status": final, **({"error": error} if error else {})}
        else:
            values = {"status": JobStatus.QUEUED, "lease_expires_at": None, "resume": True}
            event = {"status": JobStatus.QUEUED, "retry": True, "resume": True, "reason": "worker lost"}
        changed = session.exec(update(Job).where(  # type: ignore[call-overload]
            Job.id == job_id, Job.attempt == attempt, Job.status == status).values(**values))
        if changed.rowcount != 1:
            session.rollback()
            continue
        record_job_end(session, job_id, str(values["status"]))  # webhooks (none for a re-queue), same transaction
        try:
            _salvage_live_events(session, redis, job)
        except Exception as exc:  # noqa: BLE001 - Redis lost its data too: the database history stands
            log.warning("job %s: live events not salvaged: %s", job_id, exc)
        (row,) = append_events(session, job_id, [(EventKind.STATUS, event)])
        session.commit()
        _announce(redis, job_id, row.seq, event)
        log.info("reconciler: job %s attempt %s lost its worker: %s", job_id, attempt, values["status"])
        if values["status"] == JobStatus.QUEUED:
            requeued.append((job_id, job.queue))
    return requeued


def _announce(redis: Redis, job_id: str, seq: int, event: dict) -> None:
    """Live watchers see the change at once, not at their next database poll."""
    try:
        publish(redis, job_id, seq, EventKind.STATUS, event, get_settings().event_stream_maxlen)
    except Exception as exc:  # noqa: BLE001 - stored already; watchers replay it from the database
        log.warning("job %s: status event %s not published: %s", job_id, seq, exc)


def _stale_queued(session: Session, everything: bool) -> list[tuple[str, str]]:
    cutoff = utcnow() - timedelta(seconds=get_settings().requeue_after_seconds)
    stmt = select(Job).where(Job.status == JobStatus.QUEUED, Job.cancel_requested.is_(False))  # type: ignore[attr-defined]
    if not everything:
        stmt = stmt.where(or_(Job.enqueued_at.is_(None), Job.enqueued_at < cutoff))  # type: ignore[union-attr, operator]
    return [(job.id, job.queue) for job in session.exec(stmt)]


def reconcile_once(redis: Redis) -> int:
    """One round; returns how many jobs were sent to the queue."""
    if not redis.set(LOCK_KEY, "1", nx=True, ex=max(int(get_settings().reconcile_seconds) - 1, 1)):
        return 0
    broker_lost = bool(redis.set(EPOCH_KEY, utcnow().isoformat(), nx=True))
    with Session(get_engine()) as session:
        to_send = _requeue_lost_running(session, redis) + _stale_queued(session, everything=broker_lost)
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
                with no_fork_inside():
                    reconcile_once(redis)
            except Exception as exc:  # noqa: BLE001 - Redis or the database away: next round
                log.warning("reconciler round failed: %s", exc)
