"""Where files live under the data directory.

Every path handed out is built from ids the database issued, never from text
a user typed; `inside_data_dir` is the last line of defence on the way out.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from app.settings import get_settings


def data_dir() -> Path:
    path = get_settings().resolved_data_dir
    path.mkdir(parents=True, exist_ok=True)
    return path


def datasets_dir() -> Path:
    path = data_dir() / "datasets"
    path.mkdir(parents=True, exist_ok=True)
    return path


def models_dir() -> Path:
    path = data_dir() / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path


def job_dir(job_id: str) -> Path:
    return data_dir() / "jobs" / job_id


def dataset_file(dataset_id: str) -> Path:
    return datasets_dir() / f"{dataset_id}.jsonl"


def relative(path: Path) -> str:
    return str(path.resolve().relative_to(data_dir()))


def absolute(stored: str) -> Path:
    return data_dir() / stored


def inside_data_dir(path: Path) -> Path | None:
    """The real path if it stays inside the data dir (symlinks resolved), else None."""
    root = os.path.realpath(data_dir())
    real = os.path.realpath(path)
    if os.path.commonpath([root, real]) != root or not os.path.exists(real):
        return None
    return Path(real)


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
