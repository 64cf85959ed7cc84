"""Base models that can be trained."""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from app.catalog.models import list_models

router = APIRouter(prefix="/models", tags=["models"])


@router.get("")
def get_models() -> dict[str, Any]:
    """The demo model and every `save_pretrained` folder under DATA_DIR/models."""
    models = [m.public() for m in list_models()]
    return {"data": models, "count": len(models)}
