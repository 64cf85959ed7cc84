"""The checkpoint layout shared by the trainer (writer) and the API (lister).

`checkpoints/checkpoint-<step>/` is complete only once `state.json` is in it:
the trainer writes a temp folder, fsyncs, writes `state.json` last and renames,
so a crash mid-write leaves a `tmp-*` folder that nobody lists or resumes from.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

CHECKPOINT_DIR = "checkpoints"
STATE_FILE = "state.json"
NAME = re.compile(r"^checkpoint-(\d+)$")


def checkpoint_name(step: int) -> str:
    return f"checkpoint-{step}"


def complete_checkpoints(folder: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and NAME.match(p.name) and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(NAME.match(p.name).group(1)))  # type: ignore[union-attr]


def describe(path: Path) -> dict[str, Any]:
    try:
        state = json.loads((path / STATE_FILE).read_text())
    except (OSError, ValueError):
        state = {}
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return {"name": path.name, "step": int(NAME.match(path.name).group(1)),  # type: ignore[union-attr]
            "size_bytes": size, "created_at": state.get("saved_at"), "loss": state.get("loss")}
