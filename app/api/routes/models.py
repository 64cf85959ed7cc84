"""Base models that can be trained, the admin switch that lets one run its own code, and GGUF imports."""
from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Request
from pydantic import BaseModel, Field

from app.api.deps import AdminUser, ModelImportDep, SessionDep
from app.catalog.model_imports import ImportRefused, QueueUnavailable, get_import, new_record, start_import
from app.catalog.models import default_model_id, list_models
from app.catalog.trust import REMOTE_CODE_WARNING, allow, revoke, trusted_ids

router = APIRouter(prefix="/models", tags=["models"])

ModelId = Annotated[str, Path(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$",
                              description="`demo`, a folder name under DATA_DIR/models, or a hub id `org/name`")]


class ModelTrustPublic(BaseModel):
    id: str
    trust_remote_code: bool
    warning: str | None = None


class ModelImportCreate(BaseModel):
    path: str = Field(min_length=1, max_length=4096, description="Absolute path of a .gguf file on the server")
    name: str | None = Field(None, max_length=100, description="Model folder name (default: from the file name)")


class ModelImportPublic(BaseModel):
    id: str
    path: str
    name: str | None
    state: str = Field(description="queued | running | succeeded | failed")
    messages: list[str] = Field(description="The import's progress, one line a step")
    error: str | None
    model_id: str | None = Field(description="The new model's id, once succeeded")
    created_at: float
    updated_at: float


@router.get("")
def get_models(session: SessionDep) -> dict[str, Any]:
    """The demo model and every `save_pretrained` folder under DATA_DIR/models; `default_model` for a new job."""
    trusted = trusted_ids(session)
    models = [m.public(trusted=m.id in trusted) for m in list_models()]
    return {"data": models, "count": len(models), "default_model": default_model_id()}


@router.post("/import", status_code=202, response_model=ModelImportPublic)
async def post_model_import(body: ModelImportCreate, request: Request, admin: AdminUser) -> dict[str, Any]:
    """Admins only: convert a GGUF file on the server into a model folder, on a worker; poll its status."""
    try:
        record = new_record(body.path, body.name, admin.email)
        return await start_import(getattr(request.app.state, "redis", None), record)
    except ImportRefused as exc:  # only the path's form is checked here: the problem is always `path`
        raise HTTPException(422, detail=[{"loc": ["body", "path"], "msg": str(exc), "type": "value_error"}]) from None
    except QueueUnavailable as exc:
        raise HTTPException(503, detail=str(exc)) from None


@router.get("/imports/{import_id}", response_model=ModelImportPublic)
async def get_model_import(record: ModelImportDep) -> dict[str, Any]:
    """Admins only: an import's state, progress lines and outcome (kept for a week)."""
    return record


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
