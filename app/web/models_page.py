"""The models page: what can be trained, which models an admin let run their own code, and GGUF imports.

An admin imports a GGUF file from a path on the server: the form posts to
/models/import, which queues the import on a worker (app/catalog/model_imports.py)
and answers with the import's fragment; the fragment polls /models/imports/<id>
every second while the import is queued or running, and stops when it ends; on
success it also swaps in the model table, now listing the new model.
"""
from __future__ import annotations

import secrets
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from app.api.deps import AdminUser, CurrentUser, ModelImportDep, SessionDep
from app.catalog.model_imports import (
    ImportRefused, QueueUnavailable, new_record, recent_imports, start_import,
)
from app.catalog.models import HUB_ID, LOCAL_ID, list_models
from app.catalog.trust import REMOTE_CODE_WARNING, allow, revoke, trusted_ids
from app.web.templating import templates

router = APIRouter(include_in_schema=False)
IMPORT_FRAGMENT = "partials/model_import.html"


def _models(session: Any) -> tuple[list[dict[str, Any]], set[str]]:
    trusted = trusted_ids(session)
    return [m.public(trusted=m.id in trusted) for m in list_models()], trusted


@router.get("/models", response_class=HTMLResponse)
async def models_page(request: Request, session: SessionDep, user: CurrentUser) -> HTMLResponse:
    models, trusted = _models(session)
    listed = {m["id"] for m in models}
    imports = await recent_imports(getattr(request.app.state, "redis", None)) if user.is_admin else []
    context = {"models": models, "other_trusted": sorted(trusted - listed), "warning": REMOTE_CODE_WARNING,
               "is_admin": user.is_admin, "imports": imports}
    return templates.TemplateResponse(request, "models.html", context)


@router.post("/models/import")
async def import_from_page(request: Request, admin: AdminUser) -> Response:
    """Queue the import; htmx gets its polling fragment (or the refusal, 422), a plain form the page again."""
    form = await request.form()
    try:
        record = new_record(str(form.get("path") or ""), str(form.get("name") or ""), admin.email)
        await start_import(getattr(request.app.state, "redis", None), record)
    except (ImportRefused, QueueUnavailable) as exc:
        if "HX-Request" not in request.headers:
            raise HTTPException(422 if isinstance(exc, ImportRefused) else 503, detail=str(exc)) from None
        refused = {"id": f"refused-{secrets.token_hex(4)}", "path": str(form.get("path") or ""), "name": None,
                   "state": "failed", "messages": [], "error": str(exc), "model_id": None}
        return templates.TemplateResponse(request, IMPORT_FRAGMENT, {"imp": refused}, status_code=422)
    if "HX-Request" not in request.headers:
        return RedirectResponse("/models", status_code=303)
    return templates.TemplateResponse(request, IMPORT_FRAGMENT, {"imp": record}, headers={"Vary": "HX-Request"})


@router.get("/models/imports/{import_id}", response_class=HTMLResponse)
async def import_fragment(request: Request, record: ModelImportDep, session: SessionDep) -> HTMLResponse:
    context: dict[str, Any] = {"imp": record}
    if record["state"] == "succeeded":
        context["models"], _ = _models(session)
        context["is_admin"] = True
        context["swap_rows"] = True
    return templates.TemplateResponse(request, IMPORT_FRAGMENT, context)


@router.post("/models/{model_id:path}/trust")
async def set_trust_from_page(request: Request, model_id: str, session: SessionDep, admin: AdminUser) -> RedirectResponse:
    if not (LOCAL_ID.match(model_id) or HUB_ID.match(model_id)):
        raise HTTPException(404, detail="no such model")
    if (await request.form()).get("allow") == "1":
        allow(session, model_id, admin)
    else:
        revoke(session, model_id)
    return RedirectResponse("/models", status_code=303)
