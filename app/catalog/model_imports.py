"""GGUF imports started by an admin (Models page, POST /api/v1/models/import): the record both sides share.

The conversion needs torch, so it runs on a worker (`tunedeck.import_model`,
planning queue: worker/model_import_task.py), like a traced plan
(app/planner/traced.py). The API writes the record `queued` under
`tunedeck:model-import:<id>` in Redis and sends the task with the id, the path
and the name; the worker moves it to `running`, appends each step of the import
to `messages` and ends it `succeeded` (with `model_id`) or `failed` (with
`error`). The page polls the record; the model folder itself is the truth (the
import is atomic), the record only says how it went, and expires after a week.
"""
from __future__ import annotations

import json
import secrets
import time
from typing import Any

from app.queue import IMPORT_MODEL_TASK, PLANNING_QUEUE, celery_client

IMPORT_KEY = "tunedeck:model-import:{}"
RECENT_KEY = "tunedeck:model-imports"  # ids, newest first
RECENT_KEPT = 20
RECORD_TTL_SECONDS = 7 * 24 * 3600
ACTIVE_STATES = ("queued", "running")
MAX_PATH_LENGTH = 4096


class ImportRefused(ValueError):
    """The request cannot start an import (the message says why); nothing was queued."""


class QueueUnavailable(RuntimeError):
    """Redis or the broker did not take the import."""


def new_record(path: str, name: str | None, requested_by: str) -> dict[str, Any]:
    """A queued import of `path`; the worker checks the file and the name, so only the path's form is checked here."""
    path = path.strip()
    if not path:
        raise ImportRefused("give the path of a .gguf file on the server")
    if len(path) > MAX_PATH_LENGTH or "\x00" in path:
        raise ImportRefused("that is not a usable file path")
    if not path.startswith("/"):
        raise ImportRefused(f"{path!r} is not an absolute path: give the full path of the .gguf file on the "
                            "server (the worker reads it, not your browser)")
    now = time.time()
    return {"id": f"imp_{secrets.token_hex(8)}", "path": path, "name": (name or "").strip() or None,
            "state": "queued", "messages": [], "error": None, "model_id": None,
            "requested_by": requested_by, "created_at": now, "updated_at": now}


async def start_import(redis: Any, record: dict[str, Any]) -> dict[str, Any]:
    """Store the queued record and send the task (planning queue); the record, as stored."""
    if redis is None:
        raise QueueUnavailable("importing a model needs Redis and a worker on the planning queue")
    try:
        await redis.set(IMPORT_KEY.format(record["id"]), json.dumps(record), ex=RECORD_TTL_SECONDS)
        await redis.lpush(RECENT_KEY, record["id"])
        await redis.ltrim(RECENT_KEY, 0, RECENT_KEPT - 1)
        celery_client().send_task(IMPORT_MODEL_TASK, args=[record["id"], record["path"], record["name"]],
                                  queue=PLANNING_QUEUE, retry=False)
    except Exception as exc:  # noqa: BLE001 - Redis or the broker down: say so, queue nothing
        raise QueueUnavailable(f"could not queue the import: {exc}") from exc
    return record


async def get_import(redis: Any, import_id: str) -> dict[str, Any] | None:
    if redis is None or len(import_id) > 64:
        return None
    try:
        raw = await redis.get(IMPORT_KEY.format(import_id))
    except Exception as exc:  # noqa: BLE001 - Redis down: "cannot tell now" (503), not a crash
        raise QueueUnavailable(f"could not read the import's record: {exc}") from exc
    return json.loads(raw) if raw else None


async def recent_imports(redis: Any, limit: int = 5) -> list[dict[str, Any]]:
    """The newest imports still on record (the Models page shows them); [] without Redis."""
    if redis is None:
        return []
    try:
        ids = await redis.lrange(RECENT_KEY, 0, limit - 1)
        found = [await get_import(redis, i.decode() if isinstance(i, bytes) else str(i)) for i in ids]
    except Exception:  # noqa: BLE001 - QueueUnavailable too: the page lists the models even with Redis down
        return []
    return [record for record in found if record is not None]
