"""First-start data: the demo dataset. (The demo model needs torch: the worker builds it.)"""
from __future__ import annotations


import os
import tempfile
from pathlib import Path

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from app.datasets.crud import create_dataset
from app.db import get_engine
from app.demo_dataset import DEMO_DATASET_ID, DEMO_DATASET_NAME, write_demo_dataset
from app.models import Dataset
from app import storage


def ensure_demo_dataset() -> None:
    with Session(get_engine()) as session:
        if session.get(Dataset, DEMO_DATASET_ID) is not None:
            return
        fd, name = tempfile.mkstemp(prefix=".demo-", suffix=".jsonl", dir=storage.datasets_dir())
        os.close(fd)
        source = Path(name)
        try:
            write_demo_dataset(source)
            with source.open("rb") as raw:
                create_dataset(session, raw, "jsonl", DEMO_DATASET_NAME, dataset_id=DEMO_DATASET_ID)
        except IntegrityError:
            session.rollback()  # another process registered it first
        finally:
            source.unlink(missing_ok=True)
