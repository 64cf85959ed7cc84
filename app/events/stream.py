"""The Redis side of job events: a capped stream per job whose entry ids are `0-<seq>`.

Using the event's own sequence number as the stream id lets a reader resume
from any `Last-Event-ID` with one XREAD, with no mapping table.
"""
from __future__ import annotations

import json
from typing import Any

from app.events.kinds import EventKind
from app.models import STREAM_END_STATUSES

STREAM_TTL_AFTER_END = 3600


def stream_key(job_id: str) -> str:
    return f"tunedeck:job:{job_id}:events"


def entry_fields(kind: str, data: dict[str, Any]) -> dict[str, str]:
    return {"kind": kind, "data": json.dumps(data, separators=(",", ":"))}


def parse_entry(entry_id: bytes | str, fields: dict[Any, Any]) -> tuple[int, str, dict[str, Any]]:
    entry = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    seq = int(entry.split("-", 1)[1])
    decoded = {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
        for k, v in fields.items()
    }
    return seq, decoded["kind"], json.loads(decoded["data"])


def publish(redis: Any, job_id: str, seq: int, kind: str, data: dict[str, Any], maxlen: int) -> None:
    """Append one event (sync client). Raises redis errors; callers decide what losing live delivery means."""
    key = stream_key(job_id)
    redis.xadd(key, entry_fields(kind, data), id=f"0-{seq}", maxlen=maxlen, approximate=True)
    if kind == EventKind.STATUS and data.get("status") in STREAM_END_STATUSES:
        redis.expire(key, STREAM_TTL_AFTER_END)
