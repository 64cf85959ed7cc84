"""First-start data: the built-in datasets. (The demo model needs torch: the worker builds it.)"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from app.datasets.crud import create_dataset
from app.db import get_engine
from app.demo_dataset import DEMO_DATASET_ID, DEMO_DATASET_NAME, write_demo_dataset
from app.demo_extraction import (EXTRACTION_DATASET_ID, EXTRACTION_DATASET_NAME, PREFERENCE_DATASET_ID,
                                 PREFERENCE_DATASET_NAME, write_extraction_dataset, write_preference_dataset)
from app.models import Dataset
from app import storage


# (id, name, writer): the string transformations the random demo model learns, and the
# extraction task SmolLM2 learns, and the same task as preference pairs for DPO (app/demo_extraction.py).
BUILT_IN_DATASETS: tuple[tuple[str, str, Callable[[Path], int]], ...] = (
    (DEMO_DATASET_ID, DEMO_DATASET_NAME, write_demo_dataset),
    (EXTRACTION_DATASET_ID, EXTRACTION_DATASET_NAME, write_extraction_dataset),
    (PREFERENCE_DATASET_ID, PREFERENCE_DATASET_NAME, write_preference_dataset),
)


def ensure_demo_dataset() -> None:
    """Register every built-in dataset that is not registered yet (each once, whoever starts first)."""
    for dataset_id, dataset_name, write in BUILT_IN_DATASETS:
        _ensure(dataset_id, dataset_name, write)


def _ensure(dataset_id: str, dataset_name: str, write: Callable[[Path], int]) -> None:
    with Session(get_engine()) as session:
        if session.get(Dataset, dataset_id) is not None:
            return
        fd, name = tempfile.mkstemp(prefix=".demo-", suffix=".jsonl", dir=storage.datasets_dir())
        os.close(fd)
        source = Path(name)
        try:
            write(source)
            with source.open("rb") as raw:
                create_dataset(session, raw, "jsonl", dataset_name, dataset_id=dataset_id)
        except IntegrityError:
            session.rollback()  # another process registered it first
        finally:
            source.unlink(missing_ok=True)
