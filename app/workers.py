"""Live workers, from the heartbeats they keep in Redis, and what each is running (from the database)."""
from __future__ import annotations

import json
from typing import Any

from sqlmodel import Session, select

from app.models import ACTIVE_STATUSES, Job

WORKER_KEY_PATTERN = "tunedeck:worker:*"


async def live_workers(redis: Any, session: Session) -> list[dict[str, Any]]:
    workers: list[dict[str, Any]] = []
    async for key in redis.scan_iter(match=WORKER_KEY_PATTERN, count=100):
        raw = await redis.get(key)
        if raw:
            try:
                workers.append(json.loads(raw))
            except ValueError:
                continue
    running = session.exec(select(Job).where(Job.status.in_(ACTIVE_STATUSES))).all()  # type: ignore[attr-defined]
    by_worker = {job.worker: job for job in running}
    for worker in workers:
        job = by_worker.get(worker.get("hostname"))
        worker["running"] = {"id": job.id, "name": job.name, "step": job.step, "total": job.total_steps} if job else None
    return sorted(workers, key=lambda w: str(w.get("hostname")))
