"""Server-sent events on the wire: the frames as the spec wants them, the headers, the resume point.

The JSON API's stream (app/api/routes/events.py) and the job page's
(app/web/pages.py) both use these.
"""
from __future__ import annotations

import json
from typing import Any


def format_event(seq: int | None, kind: str, data: str) -> str:
    """One SSE frame; multi-line data becomes several `data:` lines, as the spec requires."""
    head = f"id: {seq}\n" if seq is not None else ""
    body = "".join(f"data: {line}\n" for line in data.split("\n"))
    return f"{head}event: {kind}\n{body}\n"


def json_frame(seq: int | None, kind: str, data: dict[str, Any]) -> str:
    """The frame of the JSON API's stream: the event's data as compact JSON."""
    return format_event(seq, kind, json.dumps(data, separators=(",", ":")))


SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def resume_point(last_event_id: str | None, after: int | None) -> int:
    """`Last-Event-ID` (sent by browsers on reconnect) wins over the `after` query parameter."""
    if last_event_id and last_event_id.strip().isdigit():
        return int(last_event_id.strip())
    return after or 0
