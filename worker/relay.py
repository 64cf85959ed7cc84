"""Relay a job's events to Redis at once and to the database in batches.

Live watchers read Redis; the database keeps the history. Batching keeps a
chatty trainer from turning into one SQLite transaction per log line.
"""
from __future__ import annotations

import logging
import threading
from typing import Any

from redis import Redis
from sqlalchemy import update
from sqlmodel import Session

from app.db import get_engine
from app.events.store import store_batch
from app.events.stream import publish
from app.webhooks.outbox import record_job_end
from app.models import Job
from app.settings import get_settings

log = logging.getLogger(__name__)

FLUSH_SECONDS = 0.5
FLUSH_EVENTS = 100


class EventRelay:
    def __init__(self, job_id: str, last_seq: int, redis: Redis) -> None:
        self.job_id = job_id
        self.seq = last_seq
        self.redis = redis
        self.maxlen = get_settings().event_stream_maxlen
        self._pending: list[tuple[int, str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._flusher = threading.Thread(target=self._flush_loop, name=f"relay-{job_id}", daemon=True)
        self._flusher.start()

    def emit(self, kind: str, data: dict[str, Any]) -> int:
        with self._lock:
            self.seq += 1
            seq = self.seq
            self._pending.append((seq, kind, data))
            full = len(self._pending) >= FLUSH_EVENTS
        self._publish(seq, kind, data)
        if full:
            self.flush()
        return seq

    def finish(self, kind: str, data: dict[str, Any], job_values: dict[str, Any], attempt: int) -> None:
        """Store the terminal event together with the job's final state, then announce it.

        The job row is only updated while `attempt` still owns it.
        """
        self._stop.set()
        self._flusher.join(timeout=5)
        with self._lock:
            self.seq += 1
            seq = self.seq
            self._pending.append((seq, kind, data))
            self._flush_locked(job_values, attempt)
        self._publish(seq, kind, data)

    def close(self) -> None:
        """Stop without storing what is pending: a superseded attempt's events would collide."""
        self._stop.set()
        self._flusher.join(timeout=5)
        with self._lock:
            self._pending = []

    def flush(self) -> None:
        with self._lock:
            self._flush_locked()

    def _flush_locked(self, job_values: dict[str, Any] | None = None, attempt: int | None = None) -> None:
        batch = self._pending
        if not batch and not job_values:
            return
        with Session(get_engine()) as session:
            store_batch(session, self.job_id, batch)
            if job_values:
                fence = [Job.attempt == attempt] if attempt is not None else []
                changed = session.exec(update(Job).where(Job.id == self.job_id, *fence)  # type: ignore[call-overload]
                                       .values(**job_values))
                if changed.rowcount == 1 and "status" in job_values:
                    record_job_end(session, self.job_id, str(job_values["status"]))  # webhooks, same transaction
            session.commit()
        self._pending = []  # only once stored: a failed flush is retried with the same events

    def _publish(self, seq: int, kind: str, data: dict[str, Any]) -> None:
        try:
            publish(self.redis, self.job_id, seq, kind, data, self.maxlen)
        except Exception as exc:  # noqa: BLE001 - the database still gets the event; watchers replay from it
            log.warning("job %s: live event %s not published: %s", self.job_id, seq, exc)

    def _flush_loop(self) -> None:
        while not self._stop.wait(FLUSH_SECONDS):
            try:
                self.flush()
            except Exception:  # noqa: BLE001 - retried on the next tick; events stay pending
                log.exception("job %s: event flush failed", self.job_id)
