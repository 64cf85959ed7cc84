"""The plan a request gets: the instant estimate, and in traced mode the planning worker's in its place.

Traced plans are not computed here (tracing imports torch: worker/trace/,
run by worker/plan_task.py on the `planning` queue). This sends the request,
with the dataset already counted, under a key derived from its hash, then
polls Redis for the answer; the worker caches it under that key, so asking
the same question again is instant. The JSON API and the plan page both call
`compute_plan`; each turns `PlanError` (422) and `TraceUnavailable` (503/504:
the instant estimate stands) into its own answer.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool

from app.planner.architecture import Architecture
from app.planner.db_catalog import DbCatalog
from app.planner.estimate import badges
from app.planner.real_data import traced_on_rows, traced_request
from app.planner.service import PlanError, build_setup, plan, resolve_architecture, resolve_gpus
from app.queue import PLAN_TRACE_TASK, PLANNING_QUEUE, celery_client
from app.schemas.plan import PlanRequest

TRACE_KEY = "tunedeck:plan:{}"
TRACE_WAIT_SECONDS = 60.0

TokenCounter = Callable[[str, Architecture], "Path | int | None"]  # app.planner.service.TokenSource


class TraceUnavailable(Exception):
    """No traced answer now (no Redis, no free planning worker, no answer in time); the instant one stands."""

    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail


async def compute_plan(body: PlanRequest, redis: Any, catalog: DbCatalog,
                       dataset_tokens: TokenCounter) -> dict[str, Any]:
    """The instant plan, then (mode=traced) the planning queue's traced estimates in its place."""
    answer = await run_in_threadpool(plan, body, catalog, dataset_tokens)
    if body.mode == "traced":
        instant = {e["method"]: e for e in answer["estimates"]}
        answer["estimates"] = await traced_estimates(redis, body, answer)
        if answer.get("dataset_lengths"):  # the run's real steps and time (app.planner.real_data)
            answer["estimates"] = await run_in_threadpool(_on_rows, body, catalog, answer, list(instant.values()))
        for estimate in answer["estimates"]:  # what a row assumed and could not honour: the request's, not the trace's
            for key in ("not_applied", "recipe"):
                estimate.setdefault(key, instant.get(estimate["method"], {}).get(key))
        answer["badges"] = badges(answer["estimates"])
    return answer


def _on_rows(body: PlanRequest, catalog: DbCatalog, answer: dict[str, Any], instant: list[dict[str, Any]]
             ) -> list[dict[str, Any]]:
    arch = resolve_architecture(body, catalog)
    setups = {m: build_setup(body, m, arch) for m in body.methods}
    return traced_on_rows(answer["estimates"], instant, arch, setups, answer["dataset_lengths"],
                          resolve_gpus(body, catalog), catalog.runtime)


async def planning_worker_free(redis: Any) -> None:
    """Fail at once (503) rather than after a minute when no worker could take the trace now.

    A worker runs one task at a time, so one busy training a job traces only after it.
    """
    from sqlmodel import Session

    from app.db import get_engine
    from app.workers import live_workers

    try:
        with Session(get_engine()) as session:
            workers = [w for w in await live_workers(redis, session) if PLANNING_QUEUE in (w.get("queues") or [])]
    except Exception as exc:  # noqa: BLE001 - Redis down: "cannot trace now"
        raise TraceUnavailable(503, f"could not reach the planning queue: {exc}") from exc
    if not workers:
        raise TraceUnavailable(503, "no worker consumes the planning queue (TUNEDECK_WORKER_QUEUES=cpu,planning); "
                                    "the instant estimate stands")
    if all(w.get("running") for w in workers):
        raise TraceUnavailable(503, "every planning worker is busy training a job; "
                                    "the instant estimate stands (try again when it finishes)")


async def traced_estimates(redis: Any, body: PlanRequest, instant: dict[str, Any]) -> list[dict[str, Any]]:
    """Ask the planning queue to trace each method; wait for its answer in Redis (cached by request hash)."""
    if redis is None:
        raise TraceUnavailable(503, "traced plans need Redis and a worker on the planning queue")
    payload = body.model_dump(mode="json")
    payload["dataset_tokens"] = instant["dataset_tokens"]
    payload["dataset"] = None
    payload = traced_request(payload, instant.get("dataset_lengths"))  # a dataset: its widest micro-batch
    key = TRACE_KEY.format(hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32])
    cached = await redis.get(key)
    if cached is None:
        await planning_worker_free(redis)
        client = celery_client()  # celery only; no torch

        try:
            client.send_task(PLAN_TRACE_TASK, args=[key, payload], queue=PLANNING_QUEUE, retry=False)
        except Exception as exc:  # noqa: BLE001 - a broker failure is "cannot trace now", not a crash
            raise TraceUnavailable(503, f"could not reach the planning queue: {exc}") from exc
        deadline = asyncio.get_running_loop().time() + TRACE_WAIT_SECONDS
        while cached is None and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.25)
            cached = await redis.get(key)
    if cached is None:
        raise TraceUnavailable(504, "the planning worker did not answer within a minute (a large model, many "
                                    "methods); it keeps tracing and caches the answer: ask again shortly. "
                                    "The instant estimate stands")
    result = json.loads(cached)
    if "error" in result:
        raise PlanError(("mode",), result["error"])
    return list(result["estimates"])
