"""The job page's live stream: HTML fragments for htmx to swap, metrics as JSON for the chart glue.

A live event is rendered once per API process, not once per open tab: the
shared reader hands every watcher the same `LiveEvent`, which keeps what was
made from it (`LiveEvent.made`).
"""
from __future__ import annotations

import html
import json
from collections.abc import AsyncIterator
from typing import Any

from app.events.frames import format_event
from app.events.kinds import EventKind, PageEvent
from app.events.live_reader import LiveEvent
from app.events.sse import Event
from app.models import JobStatus
from app.web.templating import templates

PAGE_FRAMES = "page-frames"


def _eta(data: dict[str, Any]) -> str | None:
    step, total, elapsed = data.get("step"), data.get("total"), data.get("elapsed_seconds")
    if not (isinstance(step, int) and isinstance(total, int) and isinstance(elapsed, (int, float)) and step > 0):
        return None
    seconds = int(elapsed / step * max(total - step, 0))
    return f"{seconds // 60}m {seconds % 60:02d}s"


def _timeline_text(kind: str, data: dict[str, Any]) -> str | None:
    if kind == EventKind.STATUS:
        status = data.get("status")
        if status == JobStatus.RUNNING:
            return f"started on {data.get('worker', 'a worker')} (attempt {data.get('attempt', 1)})"
        if data.get("retry"):
            return "queued again (retry" + (", resuming from the last checkpoint)" if data.get("resume") else ", from scratch)")
        return f"{status}" + (f": {data['error']}" if data.get("error") else "")
    if kind == EventKind.LOG and isinstance(data.get("checkpoint"), dict):
        return f"checkpoint saved at step {data['checkpoint'].get('step')}"
    if kind == EventKind.LOG and data.get("resumed_from") is not None:
        return f"resumed from step {data['resumed_from']}"
    if kind == EventKind.LOG and isinstance(data.get("stopped"), dict):
        return f"stopped at step {data['stopped'].get('step')} on request, checkpoint saved"
    return None


def event_frames(job_id: str, seq: int, kind: str, data: dict[str, Any]) -> str:
    """Every SSE frame the page needs for one event, joined."""
    frames: list[str] = []
    if kind == EventKind.LOG:
        level = html.escape(str(data.get("level", "info")))
        frames.append(format_event(seq, EventKind.LOG, f'<div class="log-line {level}">{html.escape(str(data.get("message", "")))}</div>'))
        if isinstance(data.get("sample"), dict):
            frames.append(format_event(None, PageEvent.SAMPLE, templates.get_template("partials/sample.html").render(sample=data["sample"])))
        if isinstance(data.get("checkpoint"), dict):
            frames.append(format_event(None, PageEvent.CHECKPOINT, "{}"))
    elif kind == EventKind.METRIC:
        progress = templates.get_template("partials/progress.html")
        frames.append(format_event(seq, EventKind.METRIC, json.dumps(data)))
        frames.append(format_event(None, PageEvent.PROGRESS, progress.render(step=data.get("step", 0), total=data.get("total", 0), eta=_eta(data))))
    elif kind == EventKind.STATUS:
        badge = templates.get_template("partials/job_status.html")
        frames.append(format_event(seq, EventKind.STATUS, badge.render(status=data.get("status"), job_id=job_id,
                                                                      oob=True)))
    text = _timeline_text(kind, data)
    if text:
        frames.append(format_event(None, PageEvent.TIMELINE, templates.get_template("partials/timeline_item.html").render(text=text, when="")))
    return "".join(frames)


async def page_frames(job_id: str, events: AsyncIterator[Event | str]) -> AsyncIterator[str]:
    async for item in events:
        if isinstance(item, str):
            yield item
        elif isinstance(item, LiveEvent):
            yield item.made(PAGE_FRAMES, lambda e=item: event_frames(job_id, e.seq, e.kind, e.data))
        else:
            yield event_frames(job_id, *item)
    yield format_event(None, PageEvent.END, "{}")  # only the real end: job_events stops at the final status
