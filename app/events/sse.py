"""Server-sent events for one job: history from the database, then live from Redis.

The reader keeps one cursor (the last sequence number sent) and only ever
sends the next one, so a reconnect with `Last-Event-ID` gets exactly the
events after it: nothing twice, nothing skipped, even if Redis lost its data.
"""
from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from sqlmodel import Session
from starlette.concurrency import run_in_threadpool

from app.db import get_engine
from app.events.store import events_after
from app.events.stream import parse_entry, stream_key
from app.models import TERMINAL_STATUSES, Job

log = logging.getLogger(__name__)

KEEPALIVE_SECONDS = 15.0
GAP_RETRY_SECONDS = 0.2

Event = tuple[int, str, dict[str, Any]]


def format_event(seq: int | None, kind: str, data: str) -> str:
    """One SSE frame; multi-line data becomes several `data:` lines, as the spec requires."""
    head = f"id: {seq}\n" if seq is not None else ""
    body = "".join(f"data: {line}\n" for line in data.split("\n"))
    return f"{head}event: {kind}\n{body}\n"


async def json_frames(events: AsyncIterator[Event | str]) -> AsyncIterator[str]:
    async for item in events:
        if isinstance(item, str):
            yield item
        else:
            seq, kind, data = item
            yield format_event(seq, kind, json.dumps(data, separators=(",", ":")))


def is_terminal(kind: str, data: dict[str, Any]) -> bool:
    return kind == "status" and data.get("status") in TERMINAL_STATUSES


def _stored_after(job_id: str, after: int) -> tuple[list[tuple[int, str, dict[str, Any]]], str | None]:
    with Session(get_engine()) as session:
        rows = [(e.seq, e.kind, e.data) for e in events_after(session, job_id, after)]
        job = session.get(Job, job_id)
        return rows, job.status if job else None


def _job_status(job_id: str) -> str | None:
    with Session(get_engine()) as session:
        job = session.get(Job, job_id)
        return job.status if job else None


async def job_events(redis: Any, job_id: str, last_seq: int) -> AsyncIterator[Event | str]:
    """Events after `last_seq` in order; a `str` is a comment line to keep the connection alive."""
    cursor = last_seq
    key = stream_key(job_id)
    from_database = True  # at the start, after a gap and while Redis is away
    while True:
        if from_database:
            stored, status = await run_in_threadpool(_stored_after, job_id, cursor)
            for index, (seq, kind, data) in enumerate(stored):
                yield seq, kind, data
                cursor = seq
                # A retried job has events after its old terminal status: only the last one ends the stream.
                if is_terminal(kind, data) and index == len(stored) - 1 < 499 and status in TERMINAL_STATUSES:
                    return
            if status is None or (not stored and status in TERMINAL_STATUSES):
                return
            if len(stored) >= 500:
                continue
            from_database = False
        try:
            reply = await redis.xread({key: f"0-{cursor}"}, block=int(KEEPALIVE_SECONDS * 1000), count=500)
        except Exception as exc:  # noqa: BLE001 - Redis down: keep serving from the database
            log.debug("job %s: live stream unavailable (%s); polling the database", job_id, exc)
            yield ": redis unavailable, polling\n\n"
            await asyncio.sleep(1.0)
            from_database = True
            continue
        if not reply:
            yield ": keepalive\n\n"
            from_database = True  # quiet stream: it may be gone (Redis restarted); the database knows
            continue
        for entry_id, fields in reply[0][1]:
            seq, kind, data = parse_entry(entry_id, fields)
            if seq <= cursor:
                continue
            if seq != cursor + 1:
                from_database = True  # the missing events are on their way to the database
                await asyncio.sleep(GAP_RETRY_SECONDS)
                break
            yield seq, kind, data
            cursor = seq
            if is_terminal(kind, data) and await run_in_threadpool(_job_status, job_id) in TERMINAL_STATUSES:
                return
