"""Server-sent event frames, as the spec wants them on the wire."""
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
