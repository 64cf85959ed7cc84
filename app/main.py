"""The FastAPI application: JSON API under /api/v1, pages at /, static files."""
from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.staticfiles import StaticFiles
from redis.asyncio import Redis

from app.api.errors import validation_handler
from app.api.routes import datasets, events, health, job_history, jobs, models, workers
from app.bootstrap import ensure_demo_dataset
from app.schemas.methods import METHODS
from app.settings import get_settings
from app.web import pages

ROOT = Path(__file__).resolve().parent.parent
log = logging.getLogger(__name__)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = get_settings()
    app.state.redis = Redis.from_url(settings.resolved_redis_url, socket_connect_timeout=2)
    try:
        ensure_demo_dataset()
    except Exception as exc:  # noqa: BLE001 - the API still answers; /healthz names the database
        log.error("could not register the demo dataset (run `tunedeck migrate`?): %s", exc)
    yield
    await app.state.redis.aclose()


def create_app() -> FastAPI:
    app = FastAPI(
        title="Tunedeck",
        version="0.1.0",
        description="Plan, launch and watch fine-tuning jobs of language models.",
        lifespan=lifespan,
    )
    app.add_exception_handler(RequestValidationError, validation_handler(frozenset(METHODS)))
    app.include_router(health.router)
    for router in (datasets.router, jobs.router, job_history.router, events.router, models.router, workers.router):
        app.include_router(router, prefix="/api/v1")
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=ROOT / "static"), name="static")
    return app


app = create_app()
