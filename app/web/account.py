"""Login, logout and the settings page where a user manages API tokens."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from app.api.deps import CurrentUser, SessionDep
from app.auth.csrf import verify_csrf
from app.auth.sessions import log_in, log_out
from app.auth.users import authenticate, create_token, revoke_token
from app.web.templating import templates
from app.web.webhooks_page import settings_context

public = APIRouter(include_in_schema=False, dependencies=[Depends(verify_csrf)])
private = APIRouter(include_in_schema=False)


def _safe_next(target: str | None) -> str:
    """Only a path on this site: never an open redirect."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/jobs"
    return target


@public.get("/login", response_class=HTMLResponse)
def login_page(request: Request, next: str | None = None) -> HTMLResponse:  # noqa: A002 - the usual name
    return templates.TemplateResponse(request, "login.html", {"next": _safe_next(next), "error": None, "email": ""})


@public.post("/login", response_class=HTMLResponse)
def login(
    request: Request, session: SessionDep,
    email: Annotated[str, Form(max_length=320)], password: Annotated[str, Form(max_length=1024)],
    next: Annotated[str, Form()] = "/jobs",  # noqa: A002
) -> Response:
    user = authenticate(session, email, password)
    if user is None:
        context = {"next": _safe_next(next), "error": "Wrong email or password.", "email": email}
        return templates.TemplateResponse(request, "login.html", context, status_code=401)
    log_in(request, session, user)
    return RedirectResponse(_safe_next(next), status_code=303)


@public.post("/logout")
def logout(request: Request, session: SessionDep) -> RedirectResponse:
    log_out(request, session)
    return RedirectResponse("/login", status_code=303)


@private.get("/settings", response_class=HTMLResponse)
def settings_page(request: Request, session: SessionDep, user: CurrentUser) -> HTMLResponse:
    return templates.TemplateResponse(request, "settings.html", settings_context(session, user))


@private.post("/settings/tokens", response_class=HTMLResponse)
def new_token(
    request: Request, session: SessionDep, user: CurrentUser, name: Annotated[str, Form(max_length=100)] = ""
) -> HTMLResponse:
    _, plain = create_token(session, user, name)
    context = settings_context(session, user, new_token=plain)
    return templates.TemplateResponse(request, "settings.html", context)


@private.post("/settings/tokens/{token_id}/revoke")
def revoke(session: SessionDep, user: CurrentUser, token_id: str) -> RedirectResponse:
    revoke_token(session, user, token_id)
    return RedirectResponse("/settings", status_code=303)
