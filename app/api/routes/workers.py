"""The workers serving queues right now."""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request

from app.api.deps import SessionDep
from app.serving.client import live_servers
from app.workers import live_workers

router = APIRouter(prefix="/workers", tags=["workers"])


@router.get("")
async def get_workers(request: Request, session: SessionDep) -> dict[str, Any]:
    """Each worker's host, accelerator, queues and current job, and each inference process's memory and
    loaded models (`inference`); 503 when Redis cannot be read."""
    try:
        workers = await live_workers(request.app.state.redis, session)
        servers = await live_servers(request.app.state.redis)
    except Exception as exc:  # noqa: BLE001 - Redis is where heartbeats live
        raise HTTPException(503, detail=f"cannot read worker heartbeats from Redis: {exc}") from exc
    return {"data": workers, "count": len(workers), "inference": [s.model_dump() for s in servers]}
