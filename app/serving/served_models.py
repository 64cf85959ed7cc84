"""Model ids the inference process answers for, per caller, and what each resolves to on disk.

Ids, as `/v1/models` lists them and `/v1/chat/completions` takes them:

- a base model: its folder name under DATA_DIR/models (`smollm2-135m-instruct`, `demo`);
- a succeeded job: `ft:<base>:<job id>` (its download: a PEFT adapter, a bottleneck adapter, or a
  model folder for full/freeze/GaLore);
- one of its checkpoints: `ft:<base>:<job id>:ckpt-<step>` (adapter methods: a checkpoint carries the
  same adapter folder as the download);
- its merged download, where it has one: `ft:<base>:<job id>:merged`.

Ownership is the jobs': another user's job is not listed and resolves to "not found", exactly as
an id that does not exist (the API's 404), unless the caller is an admin.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlmodel import Session, select

from app import storage
from app.auth.visibility import can_see
from app.catalog.models import list_models, local_folder
from app.jobs.artifacts import artifact_folder
from app.jobs.checkpoints import CHECKPOINT_DIR, complete_checkpoints
from app.models import Job, JobStatus, User
from app.serving.protocol import ServedModel

FT_ID = re.compile(r"^ft:(?P<base>[^:]+):(?P<job>[A-Za-z0-9_-]{1,64})(?::(?P<part>ckpt-\d+|merged))?$")
SHARED_BASE_METHODS = frozenset({"lora", "dora", "qlora"})  # LoRA-family: loaded into the base's PeftModel


class ModelNotServed(LookupError):
    """No model by that id for this caller (or its files are gone)."""


@dataclass(frozen=True)
class Listed:
    """One row of `/v1/models`."""

    id: str
    created: int
    owned_by: str
    kind: str  # base | job | checkpoint | merged
    job_id: str | None = None
    step: int | None = None

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "object": "model", "created": self.created, "owned_by": self.owned_by}


def _epoch(path: Path) -> int:
    try:
        return int(path.stat().st_mtime)
    except OSError:
        return 0


def _base_ref(job: Job) -> str:
    folder = local_folder(job.model)
    return str(folder) if folder is not None else job.model


def _tokenizer_of(folder: Path, fallback: str) -> str:
    return str(folder) if (folder / "tokenizer_config.json").is_file() else fallback


def _max_positions(base_ref: str) -> int | None:
    folder = Path(base_ref)
    try:
        value = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("max_position_embeddings")
    except (OSError, ValueError):
        return None
    return value if isinstance(value, int) and value > 0 else None


def _adapter_checkpoints(job: Job) -> list[tuple[int, Path]]:
    """Checkpoints that hold an adapter folder (full-weight checkpoints hold no loadable model)."""
    found = []
    for path in complete_checkpoints(storage.job_dir(job.id) / CHECKPOINT_DIR):
        if (path / "adapter_config.json").is_file():
            found.append((int(path.name.rsplit("-", 1)[1]), path))
    return found


def _jobs(session: Session, user: User) -> list[Job]:
    query = select(Job).where(Job.status == JobStatus.SUCCEEDED).order_by(Job.finished_at.desc())  # type: ignore[attr-defined]
    if not user.is_admin:
        query = query.where((Job.owner_id == user.id) | (Job.owner_id.is_(None)))  # type: ignore[union-attr]
    return list(session.exec(query).all())


def list_served(session: Session, user: User) -> list[Listed]:
    """Every id the caller may use: the base models, then each succeeded job's, newest job first."""
    rows = [Listed(m.id, _epoch(storage.models_dir() / m.id), "tunedeck", "base") for m in list_models()]
    for job in _jobs(session, user):
        if artifact_folder(job, "adapter") is None:
            continue
        created = int(job.finished_at.timestamp()) if job.finished_at else 0
        owner = job.owner_id or "tunedeck"
        stem = f"ft:{job.model}:{job.id}"
        rows.append(Listed(stem, created, owner, "job", job.id))
        if artifact_folder(job, "merged") is not None:
            rows.append(Listed(f"{stem}:merged", created, owner, "merged", job.id))
        for step, path in _adapter_checkpoints(job):
            rows.append(Listed(f"{stem}:ckpt-{step}", _epoch(path), owner, "checkpoint", job.id, step))
    return rows


def resolve(session: Session, user: User, model_id: str) -> ServedModel:
    """What the inference process loads for `model_id`; `ModelNotServed` when the caller has no such model."""
    folder = local_folder(model_id)
    if folder is not None:
        return ServedModel(id=model_id, kind="base", base_path=str(folder), tokenizer_path=str(folder),
                           max_positions=_max_positions(str(folder)))
    match = FT_ID.match(model_id)
    job = session.get(Job, match.group("job")) if match else None
    if match is None or job is None or not can_see(user, job.owner_id) or job.model != match.group("base"):
        raise ModelNotServed(model_id)
    artifact = artifact_folder(job, "adapter")
    if artifact is None:
        raise ModelNotServed(model_id)
    base = _base_ref(job)
    tokenizer = _tokenizer_of(artifact, base)
    part = match.group("part")
    kind = "adapter" if job.method in SHARED_BASE_METHODS else "standalone"
    if part == "merged":
        merged = artifact_folder(job, "merged")
        if merged is None:
            raise ModelNotServed(model_id)
        path, kind = merged, "standalone"
        tokenizer = _tokenizer_of(merged, tokenizer)
    elif part is not None:
        step = int(part.removeprefix("ckpt-"))
        path = next((p for s, p in _adapter_checkpoints(job) if s == step), None)  # type: ignore[assignment]
        if path is None:
            raise ModelNotServed(model_id)
    else:
        path = artifact
    return ServedModel(id=model_id, kind=kind, base_path=base, path=str(path), tokenizer_path=tokenizer,
                       max_positions=_max_positions(base))
