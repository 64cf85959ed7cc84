"""Rows in every dataset format, and the new-job form's prompt preview read back as token ids."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx

ROWS: dict[str, dict[str, Any]] = {
    "instruction": {"instruction": "Write the date in ISO 8601.", "input": "3 March 2021", "output": "2021-03-03"},
    "prompt": {"prompt": "Capital of France?", "completion": "Paris"},
    "messages": {"messages": [
        {"role": "system", "content": "Answer in one word."}, {"role": "user", "content": "Colour of the sky?"},
        {"role": "assistant", "content": "Blue"}, {"role": "user", "content": "And of grass?"},
        {"role": "assistant", "content": "Green"}]},
}


def upload_rows(client: httpx.Client, name: str, rows: list[dict[str, Any]]) -> str:
    """A dataset of `rows` through the API; its id."""
    content = "".join(json.dumps(row) + "\n" for row in rows).encode()
    response = client.post("/api/v1/datasets", files={"file": (f"{name}.jsonl", content, "application/jsonl")})
    assert response.status_code in (200, 201), response.text
    return str(response.json()["id"])


def link_model(data_dir: Path, folder: Path) -> str:
    """`folder` offered as a model of the app under `data_dir` (a link: tests never write into it)."""
    target = data_dir / "models" / folder.name
    if not target.exists():
        target.symlink_to(folder, target_is_directory=True)
    return folder.name


def preview_ids(html: str) -> tuple[list[int], list[int]]:
    """(input_ids, labels) as the preview fragment carries them."""
    ids = re.search(r'data-input-ids="([^"]*)"', html)
    labels = re.search(r'data-labels="([^"]*)"', html)
    assert ids and labels, html
    return [int(i) for i in ids.group(1).split()], [int(i) for i in labels.group(1).split()]
