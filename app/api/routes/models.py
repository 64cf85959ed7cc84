"""Base models that can be trained, and the admin switch that lets one run its own code."""
from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path
from pydantic import BaseModel

from app.api.deps import AdminUser, SessionDep
from app.catalog.models import list_models
from app.catalog.trust import REMOTE_CODE_WARNING, allow, revoke, trusted_ids

router = APIRouter(prefix="/models", tags=["models"])

ModelId = Annotated[str, Path(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$",
                              description="`demo`, a folder name under DATA_DIR/models, or a hub id `org/name`")]


class ModelTrustPublic(BaseModel):
    id: str
    trust_remote_code: bool
    warning: str | None = None


@router.get("")
def get_models(session: SessionDep) -> dict[str, Any]:
    """The demo model and every `save_pretrained` folder under DATA_DIR/models."""
    trusted = trusted_ids(session)
    models = [m.public(trusted=m.id in trusted) for m in list_models()]
    return {"data": models, "count": len(models)}


@router.put("/{model_id:path}/trust", response_model=ModelTrustPublic)
def put_model_trust(model_id: ModelId, session: SessionDep, admin: AdminUser) -> ModelTrustPublic:
    """Admins only: let this model run its own code (`trust_remote_code=True`) on the workers."""
    allow(session, model_id, admin)
    return ModelTrustPublic(id=model_id, trust_remote_code=True, warning=REMOTE_CODE_WARNING)


@router.delete("/{model_id:path}/trust", response_model=ModelTrustPublic)
def delete_model_trust(model_id: ModelId, session: SessionDep, admin: AdminUser) -> ModelTrustPublic:
    """Admins only: this model's own code runs no more (jobs on it are refused)."""
    revoke(session, model_id)
    return ModelTrustPublic(id=model_id, trust_remote_code=False)
