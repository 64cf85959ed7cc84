"""Turn domain errors into the same 422 shape FastAPI uses for validation."""
from __future__ import annotations

from fastapi import HTTPException

from app.jobs.crud import FieldError


def field_error(exc: FieldError) -> HTTPException:
    return HTTPException(
        status_code=422,
        detail=[{"loc": ["body", *exc.loc], "msg": exc.message, "type": "value_error"}],
    )
