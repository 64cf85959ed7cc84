"""Server-sent events for one job: history from the database, then live from Redis.

Live events come through the process's shared reader of the job's stream
(`app.events.live_reader`), so a hundred watchers cost one XREAD per event.

The reader keeps one cursor (the last sequence number sent) and only ever
sends the next one, so a reconnect with `Last-Event-ID` gets exactly the
events after it: nothing twice, nothing skipped, even if Redis lost its data.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

from sqlmodel import Session
from starlette.concurrency import run_in_threadpool

from app.db import get_engine
from app.events.frames import json_frame
from app.events.kinds import EventKind
from app.events.live_reader import (
    JobStreamReader,
    LiveEvent,
    LiveReaders,
    RedisUnavailable,
)
from app.events.store import events_after
from app.models import STREAM_END_STATUSES, Job

log = logging.getLogger(__name__)

KEEPALIVE_SECONDS = 15.0
GAP_RETRY_SECONDS = 0.2

Event = tuple[int, str, dict[str, Any]] | LiveEvent


async def json_frames(events: AsyncIterator[Event | str]) -> AsyncIterator[str]:
    async for item in events:
        if isinstance(item, str):
            yield item
        elif isinstance(item, LiveEvent):
            yield item.frame  # made once by the shared reader for all watchers
        else:
            yield json_frame(*item)


def is_terminal(kind: str, data: dict[str, Any]) -> bool:
    return kind == EventKind.STATUS and data.get("status") in STREAM_END_STATUSES


def _stored_after(job_id: str, after: int) -> tuple[list[tuple[int, str, dict[str, Any]]], str | None]:
    with Session(get_engine()) as session:
        rows = [(e.seq, e.kind, e.data) for e in events_after(session, job_id, after)]
        job = session.get(Job, job_id)
        return rows, job.status if job else None


def _job_status(job_id: str) -> str | None:
    with Session(get_engine()) as session:
        job = session.get(Job, job_id)
        return job.status if job else None


async def job_events(live: LiveReaders, job_id: str, last_seq: int) -> AsyncIterator[Event | str]:
    """Events after `last_seq` in order; a `str` is a comment line to keep the connection alive."""
    async with live.watch(job_id, last_seq) as reader:
        async for item in _events_in_order(reader, job_id, last_seq):
            yield item


async def _events_in_order(reader: JobStreamReader, job_id: str, cursor: int) -> AsyncIterator[Event | str]:
    from_database = True  # at the start, after a gap and while Redis is away
    while True:
        if from_database:
            stored, status = await run_in_threadpool(_stored_after, job_id, cursor)
            for index, (seq, kind, data) in enumerate(stored):
                yield seq, kind, data
                cursor = seq
                # A retried job has events after its old terminal status: only the last one ends the stream.
                if is_terminal(kind, data) and index == len(stored) - 1 < 499 and status in STREAM_END_STATUSES:
                    return
            if status is None or (not stored and status in STREAM_END_STATUSES):
                return
            if len(stored) >= 500:
                continue
            from_database = False
        try:
            batch = await reader.after(cursor, KEEPALIVE_SECONDS)
        except RedisUnavailable as exc:
            log.debug("job %s: live stream unavailable (%s); polling the database", job_id, exc)
            yield ": redis unavailable, polling\n\n"
            await asyncio.sleep(1.0)
            from_database = True
            continue
        if not batch:
            yield ": keepalive\n\n"
            from_database = True  # quiet stream: it may be gone (Redis restarted); the database knows
            continue
        for event in batch:
            if event.seq <= cursor:
                continue
            if event.seq != cursor + 1:
                from_database = True  # the missing events are on their way to the database
                await asyncio.sleep(GAP_RETRY_SECONDS)
                break
            yield event
            cursor = event.seq
            if is_terminal(event.kind, event.data) and await run_in_threadpool(_job_status, job_id) in STREAM_END_STATUSES:
                return
