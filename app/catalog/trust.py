"""Which models may run their own code (`trust_remote_code`): none, unless an admin allowed it.

A model folder or hub repo whose `config.json` has an `auto_map` ships Python
that `from_pretrained(..., trust_remote_code=True)` imports and runs. That is
arbitrary code on the worker, so it is off for every model and only an admin
turns it on, one model at a time. The trainer asks `remote_code_allowed`
before it loads a model; the API refuses jobs on such models until then.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from app import storage

if TYPE_CHECKING:  # the database code is imported only when a question needs it (the trainer rarely does)
    from sqlmodel import Session

    from app.models import ModelTrust, User

log = logging.getLogger(__name__)

REMOTE_CODE_WARNING = (
    "This model runs its own Python code on the workers (trust_remote_code). "
    "Allow it only if you have read that code and pinned the revision you read."
)


def trusted_ids(session: Session) -> set[str]:
    from sqlmodel import select

    from app.models import ModelTrust

    return set(session.exec(select(ModelTrust.model_id)))


def is_trusted(session: Session, model_id: str) -> bool:
    from app.models import ModelTrust

    return session.get(ModelTrust, model_id) is not None


def allow(session: Session, model_id: str, admin: User) -> ModelTrust:
    from app.models import ModelTrust

    row = session.get(ModelTrust, model_id)
    if row is None:
        row = ModelTrust(model_id=model_id, granted_by=admin.id)
        session.add(row)
        session.commit()
        session.refresh(row)
    return row


def revoke(session: Session, model_id: str) -> bool:
    from app.models import ModelTrust

    row = session.get(ModelTrust, model_id)
    if row is None:
        return False
    session.delete(row)
    session.commit()
    return True


def model_id_for_path(model_path: str) -> str:
    """The catalog id of what the trainer loads: a folder under the models dir is its name, else the hub id."""
    path = Path(model_path)
    if path.is_absolute():
        models = storage.models_dir().resolve()
        return path.resolve().name if path.resolve().parent == models else str(path)
    return model_path


def _ships_no_code(model_path: str) -> bool:
    """A local folder whose config has no `auto_map` has no code of its own to trust."""
    config = Path(model_path) / "config.json"
    try:
        return config.is_file() and not json.loads(config.read_text(encoding="utf-8")).get("auto_map")
    except (OSError, ValueError):
        return False


def remote_code_allowed(model_path: str) -> bool:
    """For the worker: pass `trust_remote_code=True` only for a model on the allow-list.

    Models without code of their own never touch the database; if the
    allow-list cannot be read, the answer is no.
    """
    if _ships_no_code(model_path):
        return False
    from sqlalchemy.exc import SQLAlchemyError
    from sqlmodel import Session

    from app.db import get_engine

    try:
        with Session(get_engine()) as session:
            return is_trusted(session, model_id_for_path(model_path))
    except SQLAlchemyError as exc:
        log.warning("model trust list unreadable (%s): %s runs without its own code",
                    str(exc).splitlines()[0], model_path)
        return False
