"""The FastAPI application: JSON API under /api/v1, pages at /, static files.

Every route but /healthz, the login page and static files needs a user; every
state-changing request on a cookie session needs a CSRF token.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from redis.asyncio import Redis
from sqlmodel import Session
from starlette.middleware.sessions import SessionMiddleware

from app.api.deps import get_current_user
from app.api.errors import validation_handler
from app.api.routes import datasets, events, health, job_history, jobs, models, plan, plans, webhooks, workers
from app.auth.csrf import verify_csrf
from app.auth.secret import session_secret
from app.auth.sessions import LoginRequired
from app.auth.users import ensure_admin
from app.bootstrap import ensure_demo_dataset
from app.db import get_engine
from app.events.live_reader import LiveReaders
from app.planner.db_catalog import seed_catalogs
from app.methods import METHODS
from app.openai_compat import errors as openai_errors
from app.openai_compat import fine_tuning as openai_fine_tuning
from app.openai_compat import files as openai_files
from app.openai_compat import routes as openai_routes
from app.settings import get_settings
from app.upload_limit import UploadLimitMiddleware
from app.webhooks.sender import run_sender
from app.web import (account, calibration_page, job_actions, job_estimate, pages, plan_pages, playground,
                     webhooks_page)

ROOT = Path(__file__).resolve().parent.parent
log = logging.getLogger(__name__)
API_ROUTERS = (datasets.router, jobs.router, job_history.router, events.router, models.router, workers.router,
               plan.router, plans.router, webhooks.router)


REDIS_MAX_CONNECTIONS = 10_000


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = get_settings()
    # Each watched job holds a connection in its shared reader's blocking XREAD (app.events.live_reader);
    # redis-py's default pool cap (100) would make /healthz fail past 100 watched jobs.
    app.state.redis = Redis.from_url(settings.resolved_redis_url, socket_connect_timeout=2,
                                     max_connections=REDIS_MAX_CONNECTIONS)
    app.state.live = LiveReaders(app.state.redis)
    stop_sender = asyncio.Event()
    sender = asyncio.create_task(run_sender(stop_sender), name="webhook sender")
    try:
        ensure_demo_dataset()
        with Session(get_engine()) as session:
            ensure_admin(session, settings.admin_email, settings.admin_password, settings.admin_token)
            seed_catalogs(session)
    except Exception as exc:  # noqa: BLE001 - the API still answers; /healthz names the database
        log.error("first-start data not written (run `tunedeck migrate`?): %s", exc)
    yield
    stop_sender.set()
    await asyncio.wait([sender], timeout=5)
    await app.state.live.close()
    await app.state.redis.aclose()


async def _login_required(request: Request, _exc: Exception) -> Response:
    if openai_errors.is_openai_path(request):
        return openai_errors.unauthenticated()
    if request.url.path.startswith("/api/"):
        return JSONResponse({"detail": "not authenticated"}, status_code=401, headers={"WWW-Authenticate": "Bearer"})
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    if request.headers.get("hx-request"):
        return Response(status_code=401, headers={"HX-Redirect": "/login"})
    return RedirectResponse(f"/login?next={target}", status_code=303)


def _validation_errors(ours: Any) -> Any:
    """422 with pydantic's details for our API; OpenAI's 400 naming the parameter under /v1."""
    async def handle(request: Request, exc: Exception) -> Response:
        if openai_errors.is_openai_path(request):
            assert isinstance(exc, RequestValidationError)
            return openai_errors.validation_error(exc)
        return await ours(request, exc)

    return handle


async def _http_errors(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if openai_errors.is_openai_path(request):
        return openai_errors.http_error(exc.status_code, exc.detail)
    return await http_exception_handler(request, exc)


async def _docs() -> Response:
    """The interactive API page, with Swagger UI's assets from static/vendor (works without internet)."""
    return get_swagger_ui_html(openapi_url="/openapi.json", title="Tunedeck API",
                               swagger_js_url="/static/vendor/swagger-ui/swagger-ui-bundle.js",
                               swagger_css_url="/static/vendor/swagger-ui/swagger-ui.css",
                               swagger_favicon_url="/static/vendor/swagger-ui/favicon-32x32.png")


def create_app() -> FastAPI:
    settings = get_settings()
    app = FastAPI(
        title="Tunedeck",
        version="0.1.0",
        description="Plan, launch and watch fine-tuning jobs of language models.",
        lifespan=lifespan,
        docs_url=None,  # served below from static/vendor: FastAPI's own page loads Swagger UI from a CDN
        redoc_url=None,
    )
    app.add_exception_handler(RequestValidationError, _validation_errors(validation_handler(frozenset(METHODS))))
    app.add_exception_handler(LoginRequired, _login_required)
    app.add_exception_handler(HTTPException, _http_errors)
    app.add_exception_handler(openai_errors.OpenAIError, openai_errors.openai_error_handler)
    guarded = [Depends(get_current_user), Depends(verify_csrf)]
    app.include_router(health.router)
    for router in API_ROUTERS:
        app.include_router(router, prefix="/api/v1", dependencies=guarded)
    for router in (openai_routes.router, openai_files.router, openai_fine_tuning.router):
        app.include_router(router, prefix="/v1", dependencies=guarded)
    app.include_router(account.public)
    app.include_router(account.private, dependencies=guarded)
    app.include_router(pages.router, dependencies=guarded)
    app.include_router(job_actions.router, dependencies=guarded)
    app.include_router(job_estimate.router, dependencies=guarded)
    app.include_router(plan_pages.router, dependencies=guarded)
    app.include_router(calibration_page.router, dependencies=guarded)
    app.include_router(playground.router, dependencies=guarded)
    app.include_router(webhooks_page.router, dependencies=guarded)
    app.mount("/static", StaticFiles(directory=ROOT / "static"), name="static")
    app.add_api_route("/docs", _docs, include_in_schema=False)
    app.add_middleware(UploadLimitMiddleware, max_bytes=settings.max_upload_mb * 1024 * 1024)
    app.add_middleware(
        SessionMiddleware, secret_key=session_secret(), session_cookie="tunedeck_session",
        max_age=int(settings.session_hours * 3600), same_site="lax", https_only=settings.secure_cookies,
    )
    return app


app = create_app()
