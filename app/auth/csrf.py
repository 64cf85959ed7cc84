"""CSRF protection for cookie sessions.

A state-changing request that rides on the session cookie must come from our
own pages: the browser's Fetch Metadata / Origin must not say cross-site, and
it must carry the session's token (htmx sends it in `X-CSRF-Token` through
`hx-headers`; plain forms in a hidden `csrf_token` field). Requests with a
Bearer token carry no ambient credentials and need no CSRF token.
"""
from __future__ import annotations

import hmac
import secrets
from urllib.parse import urlsplit

from fastapi import HTTPException, Request

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
SESSION_KEY = "csrf"


def csrf_token(request: Request) -> str:
    token = request.session.get(SESSION_KEY)
    if not token:
        token = secrets.token_urlsafe(32)
        request.session[SESSION_KEY] = token
    return str(token)


def _same_origin(request: Request) -> bool:
    if request.headers.get("sec-fetch-site") in {"cross-site", "same-site"}:
        return False
    origin = request.headers.get("origin")
    if origin and origin != "null":
        return urlsplit(origin).netloc == request.headers.get("host", "")
    return origin != "null"


async def verify_csrf(request: Request) -> None:
    if request.method in SAFE_METHODS or request.headers.get("authorization", "").lower().startswith("bearer "):
        return
    if not _same_origin(request):
        raise HTTPException(403, detail="cross-site request refused")
    expected = request.session.get(SESSION_KEY)
    sent = request.headers.get("x-csrf-token")
    if sent is None and "form" in request.headers.get("content-type", ""):
        sent = str((await request.form()).get("csrf_token") or "")
    if not expected or not sent or not hmac.compare_digest(str(expected), sent):
        raise HTTPException(403, detail="missing or invalid CSRF token: reload the page and try again")
