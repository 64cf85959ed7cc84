"""One Redis reader per watched job, shared by every open event stream of this API process.

With a blocking XREAD per watcher, 100 browser tabs on one job meant 100
Redis round trips, 100 JSON decodes and 100 held connections for every event
the trainer published, and the page requests queued behind that work. Here
one background task per job follows the stream and keeps the recent events
in memory; watchers wait on it and take what is after their own cursor.

The reader knows only what it has seen since it started. A watcher whose
cursor is older than that (it connected with an old `Last-Event-ID`, or fell
behind the in-memory window) is answered by a plain XRANGE, so the caller's
gap checks in `app.events.sse` stay the only source of truth on order.
"""
from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from app.events.frames import json_frame
from app.events.stream import parse_entry, stream_key

log = logging.getLogger(__name__)

BLOCK_MS = 5000  # one XREAD per job at most this long, so an idle reader notices it is no longer watched
KEEP_EVENTS = 2000  # recent events held per job; older ones come from Redis (XRANGE) or the database
BATCH = 500
ERROR_PAUSE_SECONDS = 1.0


@dataclass(frozen=True)
class LiveEvent:
    """An event as read from Redis, with its SSE frame made once for every watcher rather than once each."""

    seq: int
    kind: str
    data: dict[str, Any]
    frame: str
    _made: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    def __iter__(self) -> Iterator[Any]:
        """Unpacks as `(seq, kind, data)`, like an event read from the database."""
        return iter((self.seq, self.kind, self.data))

    def made(self, key: str, make: Callable[[], str]) -> str:
        """What `make` gives for this event, made by the first watcher that asks (e.g. the page's HTML)."""
        value = self._made.get(key)
        if value is None:
            value = self._made[key] = make()
        return value


class RedisUnavailable(Exception):
    """The shared reader's last XREAD failed; watchers fall back to the database."""


def live_event(entry_id: bytes | str, fields: dict[Any, Any]) -> LiveEvent:
    seq, kind, data = parse_entry(entry_id, fields)
    return LiveEvent(seq, kind, data, json_frame(seq, kind, data))


@dataclass
class JobStreamReader:
    """Follows one job's stream from `start` (a sequence number) for as long as anyone waits on it."""

    redis: Any
    job_id: str
    start: int  # every event after this sequence number that Redis had is in `events`, in order
    events: list[LiveEvent] = field(default_factory=list)
    seqs: list[int] = field(default_factory=list)
    watchers: int = 0
    error: Exception | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def cursor(self) -> int:
        return self.seqs[-1] if self.seqs else self.start

    def _announce(self) -> None:
        """Wake every waiting watcher; a fresh Event for the next round, so no wake-up is ever missed."""
        previous, self.changed = self.changed, asyncio.Event()
        previous.set()

    def _append(self, batch: list[LiveEvent]) -> None:
        for event in batch:
            if event.seq > self.cursor:
                self.events.append(event)
                self.seqs.append(event.seq)
        if len(self.events) > KEEP_EVENTS:
            drop = len(self.events) - KEEP_EVENTS
            self.start = self.seqs[drop - 1]
            del self.events[:drop], self.seqs[:drop]

    async def _skip_history(self, key: str) -> None:
        """Start at the stream's end: the history is for XRANGE and the database, not for this reader to hold."""
        try:
            newest = await self.redis.xrevrange(key, count=1)
            if newest:
                self.start = max(self.start, parse_entry(*newest[0])[0])
        except Exception as exc:  # noqa: BLE001 - the first XREAD will say it again
            log.debug("job %s: cannot read the stream's end (%s)", self.job_id, exc)
        finally:
            self.ready.set()

    async def follow(self) -> None:
        key = stream_key(self.job_id)
        await self._skip_history(key)
        while self.watchers > 0:
            try:
                reply = await self.redis.xread({key: f"0-{self.cursor}"}, block=BLOCK_MS, count=BATCH)
                batch = [live_event(entry_id, fields) for entry_id, fields in reply[0][1]] if reply else []
                self.error = None
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - watchers hear of it and read the database meanwhile
                log.debug("job %s: shared reader cannot read Redis (%s)", self.job_id, exc)
                self.error = exc
                self._announce()
                await asyncio.sleep(ERROR_PAUSE_SECONDS)
                continue
            if batch:
                self._append(batch)
                self._announce()

    async def _range(self, after: int) -> list[LiveEvent]:
        """Events after `after` straight from Redis, for a watcher behind this reader's window."""
        try:
            entries = await self.redis.xrange(stream_key(self.job_id), min=f"0-{after + 1}", max="+", count=BATCH)
        except Exception as exc:  # noqa: BLE001
            raise RedisUnavailable(str(exc)) from exc
        return [live_event(entry_id, fields) for entry_id, fields in entries]

    async def after(self, seq: int, timeout: float) -> list[LiveEvent]:
        """Events with a sequence number above `seq`, waiting up to `timeout` for the first; [] if none came."""
        deadline = asyncio.get_running_loop().time() + timeout
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(deadline):
                await self.ready.wait()
        if seq < self.start:
            return await self._range(seq)
        while True:
            changed = self.changed  # taken before looking, so an append after the look still wakes us
            index = bisect.bisect_right(self.seqs, seq)
            if index < len(self.seqs):
                return self.events[index:index + BATCH]
            if self.error is not None:
                raise RedisUnavailable(str(self.error))
            try:
                async with asyncio.timeout_at(deadline):
                    await changed.wait()
            except TimeoutError:
                return []


@dataclass
class LiveReaders:
    """The shared readers of this process, one per watched job; each ends when its last watcher leaves."""

    redis: Any
    readers: dict[str, JobStreamReader] = field(default_factory=dict)

    @contextlib.asynccontextmanager
    async def watch(self, job_id: str, cursor: int) -> AsyncIterator[JobStreamReader]:
        reader = self.readers.get(job_id)
        if reader is None or reader.task is None or reader.task.done():
            reader = JobStreamReader(self.redis, job_id, start=cursor)
            self.readers[job_id] = reader
        reader.watchers += 1
        if reader.task is None:
            reader.task = asyncio.create_task(self._run(reader), name=f"live-reader-{job_id}")
        try:
            yield reader
        finally:
            reader.watchers -= 1

    async def _run(self, reader: JobStreamReader) -> None:
        try:
            await reader.follow()
        finally:
            if self.readers.get(reader.job_id) is reader:
                del self.readers[reader.job_id]

    async def close(self) -> None:
        tasks = [reader.task for reader in self.readers.values() if reader.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
