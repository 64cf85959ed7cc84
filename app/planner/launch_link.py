"""The new-job form's address for one plan row: every setting of the row, as the form's own fields.

Why its own module: the plan page builds the link and the job form reads it; the
one contract between them is the form's field names (`app.web.forms.FIELDS`).
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlencode

from app.planner.catalog import Catalog

HUB_URL = re.compile(r"huggingface\.co/([\w.-]+/[\w.-]+)")


def _text(value: Any) -> str:
    return str(value).strip() if value is not None else ""


def launch_links(methods: Iterable[str], values: dict[str, Any], catalog: Catalog, local_models: set[str]
                 ) -> dict[str, str]:
    """The new-job form, pre-filled: a catalog model that is also a local folder goes in `model`, else its hub id."""
    common: dict[str, str] = {}
    model = _text(values.get("hub_model")) or _text(values.get("model"))
    if not _text(values.get("config_json")) and model:
        if model in local_models:
            common["model"] = model
        else:
            entry = catalog.model(model)
            match = HUB_URL.search(entry.source) if entry is not None else None
            common["hub_model"] = match.group(1) if match else model
    for name in ("seq_len", "batch_size", "gradient_accumulation"):
        if _text(values.get(name)):
            common[name] = _text(values[name])
    return {m: "/jobs/new?" + urlencode({"method": m, **common}) for m in methods}
