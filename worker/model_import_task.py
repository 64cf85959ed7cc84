"""An admin's GGUF import on the planning queue: run `import_gguf`, keep its record in Redis up to date.

The record (app/catalog/model_imports.py) is queued by the API; this moves it
to `running`, appends each progress line of the import to `messages` (the page
polls them) and ends it `succeeded` with the model's id or `failed` with the
refusal (a GgufImportError: not found, not a file, corrupt, an architecture
transformers cannot load, a name taken or unsafe) or the unexpected error.
Only this task writes the record once it is queued. The folder is written
atomically by import_gguf: a failed import leaves nothing under the models
directory.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Protocol

from app.catalog.model_imports import IMPORT_KEY, RECORD_TTL_SECONDS

log = logging.getLogger(__name__)
MAX_MESSAGES = 200


class KeyValue(Protocol):
    def get(self, key: str) -> Any: ...

    def set(self, key: str, value: str, ex: int | None = None) -> Any: ...


class ImportRecord:
    """The record under IMPORT_KEY, written back after every change."""

    def __init__(self, store: KeyValue, import_id: str, path: str, name: str | None) -> None:
        self.store, self.key = store, IMPORT_KEY.format(import_id)
        raw = store.get(self.key)
        self.data: dict[str, Any] = json.loads(raw) if raw else {
            "id": import_id, "path": path, "name": name, "messages": [], "error": None, "model_id": None,
            "requested_by": None, "created_at": time.time()}

    def update(self, **fields: Any) -> None:
        self.data.update(fields, updated_at=time.time())
        self.store.set(self.key, json.dumps(self.data), ex=RECORD_TTL_SECONDS)

    def say(self, line: str) -> None:
        self.data["messages"] = [*self.data.get("messages", []), line][-MAX_MESSAGES:]
        self.update()


def run_model_import(import_id: str, path: str, name: str | None, store: KeyValue | None = None) -> None:
    """The task body: import `path` into DATA_DIR/models (as `name`, or the file's own name)."""
    if store is None:
        from redis import Redis

        from app.settings import get_settings

        store = Redis.from_url(get_settings().resolved_redis_url)
    from app.storage import models_dir
    from worker.gguf_import import GgufImportError, import_gguf

    record = ImportRecord(store, import_id, path, name)
    record.update(state="running")
    try:
        folder = import_gguf(Path(path), models_dir(), name, progress=record.say)
    except GgufImportError as exc:
        record.update(state="failed", error=str(exc))
        return
    except Exception as exc:  # noqa: BLE001 - anything else: the record says so, the worker stays up
        log.exception("importing %s failed", path)
        record.update(state="failed", error=f"the import failed: {type(exc).__name__}: {exc}"[:1000])
        return
    record.update(state="succeeded", model_id=folder.name)
