"""Turn domain errors into the same 422 shape FastAPI uses for validation."""
from __future__ import annotations

from typing import Any

from fastapi import HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from app.jobs.crud import FieldError


def field_error(exc: FieldError) -> HTTPException:
    return HTTPException(
        status_code=422,
        detail=[{"loc": ["body", *exc.loc], "msg": exc.message, "type": "value_error"}],
    )


def clean_loc(loc: tuple[Any, ...] | list[Any], tags: frozenset[str]) -> list[Any]:
    """Drop the discriminator tag pydantic puts in union locations: `body.lora.r` -> `body.method_config.r`."""
    parts = list(loc)
    if len(parts) > 1 and parts[0] == "body" and parts[1] in tags:
        del parts[1]
    return parts


def validation_handler(tags: frozenset[str]):  # type: ignore[no-untyped-def]
    async def handle(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = []
        for error in exc.errors():
            error = dict(error)
            error["loc"] = clean_loc(error.get("loc", ()), tags)
            if error.get("type") in {"union_tag_invalid", "union_tag_not_found"}:
                error["loc"] = [*error["loc"], "method"]
                error["msg"] = f"method must be one of: {', '.join(sorted(tags))}"
            error.pop("url", None)
            errors.append(error)
        return JSONResponse(status_code=422, content={"detail": jsonable_encoder(errors)})

    return handle
