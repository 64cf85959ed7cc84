"""The shared live reader: one XREAD per job serves every watcher, in order, against a real redis-server."""
from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from redis import Redis as SyncRedis
from redis.asyncio import Redis

from app.embedded_redis import free_port
from app.events import live_reader
from app.events.live_reader import LiveReaders, RedisUnavailable
from app.events.stream import publish
from tests.helpers.stack import Stack

pytestmark = pytest.mark.integration


def publish_range(redis_url: str, job_id: str, seqs: range) -> None:
    sync = SyncRedis.from_url(redis_url)
    for seq in seqs:
        publish(sync, job_id, seq, "metric", {"step": seq, "loss": 1.0 / seq}, maxlen=10_000)
    sync.close()


def xread_calls(redis_url: str) -> int:
    stats = SyncRedis.from_url(redis_url).info("commandstats")
    return int(stats.get("cmdstat_xread", {}).get("calls", 0))


def in_own_loop(main: Callable[[], Awaitable[Any]]) -> Any:
    """asyncio.run in a thread of its own: Playwright's sync API (the browser tests, session-wide)
    keeps an event loop running in the main thread, where asyncio.run refuses to start."""
    with ThreadPoolExecutor(1) as thread:
        return thread.submit(asyncio.run, main()).result()


def run(redis_url: str, body: Callable[[LiveReaders], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        redis = Redis.from_url(redis_url, max_connections=1000)
        live = LiveReaders(redis)
        try:
            return await body(live)
        finally:
            await live.close()
            await redis.aclose()
    return in_own_loop(main)


async def collect(live: LiveReaders, job_id: str, after: int, last: int) -> list[int]:
    """What one watcher gets, waiting on the shared reader, until it has `last`."""
    seen: list[int] = []
    async with live.watch(job_id, after) as reader:
        cursor = after
        while cursor < last:
            for event in await reader.after(cursor, timeout=10):
                seen.append(event.seq)
                cursor = event.seq
    return seen


def test_fifty_watchers_get_every_event_in_order_from_one_reader(stack: Stack) -> None:
    job_id = uuid.uuid4().hex

    async def body(live: LiveReaders) -> tuple[list[list[int]], int]:
        watchers = [asyncio.create_task(collect(live, job_id, 0, 30)) for _ in range(50)]
        await asyncio.sleep(0.3)  # all waiting on the one reader
        readers = len(live.readers)
        await asyncio.to_thread(publish_range, stack.redis_url, job_id, range(1, 31))
        return await asyncio.gather(*watchers), readers

    before = xread_calls(stack.redis_url)
    results, readers = run(stack.redis_url, body)
    calls = xread_calls(stack.redis_url) - before
    assert readers == 1
    assert all(seen == list(range(1, 31)) for seen in results)
    assert calls <= 31, f"{calls} XREADs for 30 events and 50 watchers: the reader is not shared"


def test_a_watcher_older_than_the_reader_gets_the_earlier_events_from_redis(stack: Stack) -> None:
    job_id = uuid.uuid4().hex
    publish_range(stack.redis_url, job_id, range(1, 6))

    async def body(live: LiveReaders) -> list[int]:
        async with live.watch(job_id, 5) as reader:  # starts at the stream's end
            await reader.ready.wait()
            return [event.seq for event in await reader.after(2, timeout=1)]

    assert run(stack.redis_url, body) == [3, 4, 5]


def test_a_watcher_behind_the_kept_window_still_gets_every_event(stack: Stack, monkeypatch) -> None:
    monkeypatch.setattr(live_reader, "KEEP_EVENTS", 10)
    job_id = uuid.uuid4().hex

    async def body(live: LiveReaders) -> tuple[list[int], list[int]]:
        async with live.watch(job_id, 0) as reader:
            await reader.ready.wait()
            await asyncio.to_thread(publish_range, stack.redis_url, job_id, range(1, 41))
            while reader.cursor < 40:
                await asyncio.sleep(0.05)
            kept = list(reader.seqs)
            slow: list[int] = []
            while not slow or slow[-1] < 40:
                slow += [event.seq for event in await reader.after(slow[-1] if slow else 0, timeout=1)]
            return kept, slow

    kept, slow = run(stack.redis_url, body)
    assert kept == list(range(31, 41))
    assert slow == list(range(1, 41))


def test_a_quiet_stream_answers_empty_after_the_watchers_timeout(stack: Stack) -> None:
    job_id = uuid.uuid4().hex

    async def body(live: LiveReaders) -> tuple[list[Any], float]:
        async with live.watch(job_id, 0) as reader:
            started = time.monotonic()
            events = await reader.after(0, timeout=0.5)
            return events, time.monotonic() - started

    events, waited = run(stack.redis_url, body)
    assert events == []
    assert 0.4 < waited < 3


def test_the_reader_ends_when_its_last_watcher_leaves(stack: Stack) -> None:
    job_id = uuid.uuid4().hex

    async def body(live: LiveReaders) -> tuple[int, bool]:
        async with live.watch(job_id, 0) as reader:
            await reader.ready.wait()
        assert reader.task is not None
        await asyncio.to_thread(publish_range, stack.redis_url, job_id, range(1, 2))  # wakes its XREAD
        await asyncio.wait_for(asyncio.shield(reader.task), 10)
        return len(live.readers), reader.task.done()

    assert run(stack.redis_url, body) == (0, True)


def test_a_watcher_arriving_after_the_reader_ended_gets_a_new_one(stack: Stack) -> None:
    job_id = uuid.uuid4().hex

    async def body(live: LiveReaders) -> list[int]:
        async with live.watch(job_id, 0) as first:
            await first.ready.wait()
        await asyncio.to_thread(publish_range, stack.redis_url, job_id, range(1, 3))
        assert first.task is not None
        await asyncio.wait_for(asyncio.shield(first.task), 10)
        return await collect(live, job_id, 0, 2)

    assert run(stack.redis_url, body) == [1, 2]


def test_redis_down_is_reported_to_the_watcher_not_hidden(stack: Stack) -> None:
    dead_url = f"redis://127.0.0.1:{free_port()}/0"

    async def body(live: LiveReaders) -> str:
        async with live.watch(uuid.uuid4().hex, 0) as reader:
            with pytest.raises(RedisUnavailable) as raised:
                for _ in range(20):
                    await reader.after(0, timeout=1)
            return str(raised.value)

    assert "connect" in run(dead_url, body).lower()


def test_each_event_is_framed_once_for_every_watcher(stack: Stack) -> None:
    job_id = uuid.uuid4().hex

    async def body(live: LiveReaders) -> list[list[str]]:
        async def frames() -> list[str]:
            async with live.watch(job_id, 0) as reader:
                return [event.frame for event in await reader.after(0, timeout=10)]
        tasks = [asyncio.create_task(frames()) for _ in range(3)]
        await asyncio.sleep(0.3)
        await asyncio.to_thread(publish_range, stack.redis_url, job_id, range(1, 2))
        return await asyncio.gather(*tasks)

    first, second, third = run(stack.redis_url, body)
    assert first == ['id: 1\nevent: metric\ndata: {"step":1,"loss":1.0}\n\n']
    assert first[0] is second[0] is third[0]


def test_the_page_renders_a_live_event_once_for_every_open_tab() -> None:
    from app.events.live_reader import live_event
    from app.events.stream import entry_fields
    from app.web.job_stream import page_frames

    event = live_event(b"0-7", entry_fields("metric", {"step": 7, "total": 10, "loss": 0.5, "elapsed_seconds": 7.0}))

    async def tab(item: object) -> list[str]:
        async def one() -> AsyncIterator[object]:
            yield item
        return [frame async for frame in page_frames("job-1", one())]  # type: ignore[arg-type]

    async def body() -> tuple[list[list[str]], list[str]]:
        return await asyncio.gather(tab(event), tab(event), tab(event)), await tab(tuple(event))

    tabs, from_database = in_own_loop(body)
    assert tabs[0][0] is tabs[1][0] is tabs[2][0]  # made once, shared
    assert tabs[0] == from_database  # and the same as the page makes from a stored event
    assert "id: 7\nevent: metric\n" in tabs[0][0] and "event: progress" in tabs[0][0] and "3m" not in tabs[0][0]
