"""The models page: what can be trained, and which models an admin let run their own code."""
from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from app.api.deps import AdminUser, CurrentUser, SessionDep
from app.catalog.models import HUB_ID, LOCAL_ID, list_models
from app.catalog.trust import REMOTE_CODE_WARNING, allow, revoke, trusted_ids
from app.web.templating import templates

router = APIRouter(include_in_schema=False)


@router.get("/models", response_class=HTMLResponse)
def models_page(request: Request, session: SessionDep, user: CurrentUser) -> HTMLResponse:
    trusted = trusted_ids(session)
    models = [m.public(trusted=m.id in trusted) for m in list_models()]
    listed = {m["id"] for m in models}
    context = {"models": models, "other_trusted": sorted(trusted - listed), "warning": REMOTE_CODE_WARNING,
               "is_admin": user.is_admin}
    return templates.TemplateResponse(request, "models.html", context)


@router.post("/models/{model_id:path}/trust")
async def set_trust_from_page(request: Request, model_id: str, session: SessionDep, admin: AdminUser) -> RedirectResponse:
    if not (LOCAL_ID.match(model_id) or HUB_ID.match(model_id)):
        raise HTTPException(404, detail="no such model")
    if (await request.form()).get("allow") == "1":
        allow(session, model_id, admin)
    else:
        revoke(session, model_id)
    return RedirectResponse("/models", status_code=303)
