"""Liveness of every part a job needs: database, Redis, workers."""
from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool

from app.db import get_engine

router = APIRouter()


def _database_ok() -> bool:
    try:
        with get_engine().connect() as conn:
            conn.execute(text("SELECT 1"))
        return True
    except Exception:  # noqa: BLE001 - any failure means "down"
        return False


async def _workers(request: Request) -> tuple[bool, int]:
    redis = request.app.state.redis
    try:
        await asyncio.wait_for(redis.ping(), timeout=2)
        keys = [key async for key in redis.scan_iter(match="tunedeck:worker:*", count=100)]
    except Exception:  # noqa: BLE001
        return False, 0
    return True, len(keys)


@router.get("/healthz", tags=["health"])
async def healthz(request: Request) -> JSONResponse:
    """200 when the database and Redis answer; 503 naming the part that does not."""
    database = await run_in_threadpool(_database_ok)
    redis_ok, workers = await _workers(request)
    body = {
        "status": "ok" if database and redis_ok else "degraded",
        "database": "ok" if database else "down",
        "redis": "ok" if redis_ok else "down",
        "workers": workers,
    }
    return JSONResponse(body, status_code=200 if database and redis_ok else 503)
