"""Store a validated dataset: file and row appear together or not at all."""
from __future__ import annotations

import os
from pathlib import Path
from typing import IO

from sqlalchemy import or_
from sqlmodel import Session, select

from app import storage
from app.datasets.validate import ValidationReport, normalise
from app.models import Dataset, User, new_id


class DatasetRejected(Exception):
    def __init__(self, errors: list[dict]) -> None:
        super().__init__("dataset rejected")
        self.errors = errors


def safe_display_name(filename: str | None) -> str:
    """Keep a readable name for the page; it never becomes a path."""
    name = (filename or "dataset").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable() and ch not in "\u202e\u202d\u200f\u200e")
    return (name or "dataset")[:120]


def kind_of(filename: str | None, content_type: str | None) -> str | None:
    lowered = (filename or "").lower()
    if lowered.endswith((".jsonl", ".json", ".ndjson")):
        return "jsonl"
    if lowered.endswith(".csv"):
        return "csv"
    if content_type in {"text/csv"}:
        return "csv"
    if content_type in {"application/jsonl", "application/x-ndjson", "application/json"}:
        return "jsonl"
    return None


def create_dataset(
    session: Session, raw: IO[bytes], kind: str, name: str, dataset_id: str | None = None, owner_id: str | None = None
) -> Dataset:
    dataset_id = dataset_id or new_id()
    target = storage.dataset_file(dataset_id)
    # Owner-only (0600), as uploads have always been stored.
    with storage.atomic_file(target, "w", encoding="utf-8", permissions=0o600) as out:
        report: ValidationReport = normalise(raw, kind, out)
        if not report.ok:
            raise DatasetRejected(report.errors)
        out.flush()
        dataset = Dataset(
            id=dataset_id, owner_id=owner_id, name=name, format=report.format or "text", rows=report.rows,
            size_bytes=os.fstat(out.fileno()).st_size, path=storage.relative(target),
        )
    session.add(dataset)
    try:
        session.commit()
    except Exception:
        target.unlink(missing_ok=True)
        raise
    session.refresh(dataset)
    _count_in_background(target)
    return dataset


def _count_in_background(path: Path) -> None:
    """Count the new dataset's tokens for the default model now, so its first plan is instant."""
    from app.catalog.models import default_model_id
    from app.datasets.token_lengths import warm

    warm(path, default_model_id())


def list_datasets(session: Session, user: User) -> list[Dataset]:
    """The user's own datasets and the shared ones (the demo); an admin sees all."""
    stmt = select(Dataset)
    if not user.is_admin:
        stmt = stmt.where(or_(Dataset.owner_id == user.id, Dataset.owner_id.is_(None)))  # type: ignore[union-attr]
    return list(session.exec(stmt.order_by(Dataset.created_at.desc())))  # type: ignore[attr-defined]


class DatasetInUse(Exception):
    """A queued, running or paused job trains or evaluates on the dataset: deleting it would fail that job."""


STILL_NEEDED = ("queued", "running", "cancelling", "pausing", "paused")


def delete_dataset(session: Session, dataset: Dataset) -> None:
    """Remove the row and the file; refused (`DatasetInUse`, naming the jobs) while a job still needs it."""
    from app.models import Job

    jobs = session.exec(select(Job).where(Job.status.in_(STILL_NEEDED))).all()  # type: ignore[attr-defined]
    users = [j.id for j in jobs if dataset.id in (j.dataset_id, (j.config or {}).get("validation_dataset"))]
    if users:
        raise DatasetInUse(f"dataset {dataset.id} is used by {len(users)} job(s) not finished yet "
                           f"({', '.join(users[:5])}); cancel them or wait for them to end")
    path = storage.absolute(dataset.path)
    session.delete(dataset)
    session.commit()
    path.unlink(missing_ok=True)
