"""The Settings page's webhooks: add an endpoint (its secret shown once), see its deliveries, delete it."""
from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlmodel import Session

from app.api.deps import CurrentUser, SessionDep
from app.auth.users import list_tokens
from app.models import User
from app.webhooks.endpoints import EndpointRefused, deliveries, endpoints_of, owned, register, remove
from app.webhooks.outbox import EVENT_TYPES
from app.web.templating import templates

router = APIRouter()


def settings_context(session: Session, user: User, **extra: Any) -> dict[str, Any]:
    """Everything settings.html shows: tokens, and each webhook endpoint with its latest deliveries."""
    hooks = [{"endpoint": e, "deliveries": deliveries(session, e.id, limit=10)} for e in endpoints_of(session, user)]
    return {"tokens": list_tokens(session, user), "new_token": None, "webhooks": hooks, "event_types": EVENT_TYPES,
            "new_secret": None, "webhook_error": None, "is_admin": user.is_admin, **extra}


@router.post("/settings/webhooks", response_class=HTMLResponse)
def add_webhook(request: Request, session: SessionDep, user: CurrentUser, url: Annotated[str, Form(max_length=2000)],
                events: Annotated[list[str] | None, Form()] = None,
                allow_local: Annotated[str | None, Form()] = None) -> Response:
    try:
        endpoint = register(session, user, url.strip(), events, allow_local == "on")
    except EndpointRefused as exc:
        context = settings_context(session, user, webhook_error=f"{exc.field}: {exc.message}", webhook_url=url)
        return templates.TemplateResponse(request, "settings.html", context, status_code=422)
    context = settings_context(session, user, new_secret={"id": endpoint.id, "secret": endpoint.secret})
    return templates.TemplateResponse(request, "settings.html", context)


@router.post("/settings/webhooks/{endpoint_id}/delete")
def delete_webhook(endpoint_id: str, session: SessionDep, user: CurrentUser) -> RedirectResponse:
    endpoint = owned(session, user, endpoint_id)
    if endpoint is not None:
        remove(session, endpoint)
    return RedirectResponse("/settings", status_code=303)
