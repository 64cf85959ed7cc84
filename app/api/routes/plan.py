"""The planner: every method's memory, time and cost before launch."""
from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from starlette.concurrency import run_in_threadpool

from app.api.deps import CurrentUser, SessionDep
from app.planner.architecture import Architecture
from app.planner.db_catalog import DbCatalog
from app.planner.estimate import badges
from app.planner.fit import make_it_fit
from app.planner.records import store_plan
from app.planner.service import (PlanError, build_setup, bytes_per_token, catalog_listing, dataset_file_tokens, plan,
                                 resolve_architecture, resolve_gpus)
from app.schemas.plan import FitRequest, PlanRequest, PlanResponse

router = APIRouter(prefix="/plan", tags=["plan"])

PLAN_TRACE_TASK = "tunedeck.plan_trace"
TRACE_KEY = "tunedeck:plan:{}"
TRACE_WAIT_SECONDS = 60.0



def get_plan_catalog(session: SessionDep) -> DbCatalog:
    """The database catalog (seeded from app/planner/data on first start, edited on /plan/catalog)."""
    return DbCatalog(session)


CatalogDep = Annotated[DbCatalog, Depends(get_plan_catalog)]
TokenCounter = Callable[[str, Architecture], "int | None"]


def get_dataset_tokens(request: Request) -> TokenCounter:
    """Tokens of a stored dataset the caller may see, counted from its normalised file (bytes; BPE: bytes / 4).

    The API's auth dependency leaves the user on `request.state`; without one only shared datasets count.
    """
    user = getattr(request.state, "user", None)

    def count(dataset_id: str, arch: Architecture) -> int | None:
        from sqlmodel import Session

        from app import storage
        from app.db import get_engine
        from app.models import Dataset

        with Session(get_engine()) as session:
            row = session.get(Dataset, dataset_id)
        if row is None:
            return None
        if row.owner_id is not None and not (user is not None and (user.is_admin or row.owner_id == user.id)):
            return None  # someone else's: as if it did not exist
        return dataset_file_tokens(storage.absolute(row.path), bytes_per_token(arch))

    return count


DatasetTokensDep = Annotated[TokenCounter, Depends(get_dataset_tokens)]


def _unprocessable(exc: PlanError) -> HTTPException:
    return HTTPException(422, detail=[{"loc": ["body", *exc.loc], "msg": exc.message, "type": "value_error"}])


@router.get("/catalog")
def get_catalog(catalog: CatalogDep) -> dict[str, Any]:
    """Model architectures and GPUs the planner knows, with their sources and dates."""
    return catalog_listing(catalog)


@router.post("", response_model=PlanResponse)
async def post_plan(body: PlanRequest, request: Request, catalog: CatalogDep, dataset_tokens: DatasetTokensDep,
                    session: SessionDep, user: CurrentUser) -> dict[str, Any]:
    """Peak memory by component, FLOPs, time and cost of each method on each GPU; stored as a plan (`id`)."""
    answer = await compute_plan(body, request, catalog, dataset_tokens)
    record = await run_in_threadpool(store_plan, session, user, body.model_dump(mode="json", exclude_none=True), answer)
    return {**answer, "id": record.id}


async def compute_plan(body: PlanRequest, request: Request, catalog: DbCatalog,
                       dataset_tokens: TokenCounter) -> dict[str, Any]:
    """The instant plan, then (mode=traced) the planning queue's traced estimates in its place."""
    try:
        answer = await run_in_threadpool(plan, body, catalog, dataset_tokens)
    except PlanError as exc:
        raise _unprocessable(exc) from exc
    if body.mode == "traced":
        answer["estimates"] = await _traced(request, body, answer)
        answer["badges"] = badges(answer["estimates"])
    return answer


@router.post("/fit")
def post_fit(body: FitRequest, catalog: CatalogDep) -> dict[str, Any]:
    """Make it fit: the largest micro-batch and the cheapest checkpointing/accumulation for one GPU."""
    try:
        arch = resolve_architecture(body, catalog)
        setup = build_setup(body, body.methods[0], arch)
        gpu = resolve_gpus(body, catalog)[0]
    except PlanError as exc:
        raise _unprocessable(exc) from exc
    return {"method": setup.method, "gpu": gpu.name, **make_it_fit(arch, setup, gpu, catalog.runtime).public()}


async def _planning_worker_free(redis: Any) -> None:
    """Fail at once (503) rather than after a minute when no worker could take the trace now.

    A worker runs one task at a time, so one busy training a job traces only after it.
    """
    from sqlmodel import Session

    from app.db import get_engine
    from app.workers import live_workers

    try:
        with Session(get_engine()) as session:
            workers = [w for w in await live_workers(redis, session) if "planning" in (w.get("queues") or [])]
    except Exception as exc:  # noqa: BLE001 - Redis down: "cannot trace now"
        raise HTTPException(503, detail=f"could not reach the planning queue: {exc}") from exc
    if not workers:
        raise HTTPException(503, detail="no worker consumes the planning queue (TUNEDECK_WORKER_QUEUES=cpu,planning); "
                                        "the instant estimate stands")
    if all(w.get("running") for w in workers):
        raise HTTPException(503, detail="every planning worker is busy training a job; "
                                        "the instant estimate stands (try again when it finishes)")


async def _traced(request: Request, body: PlanRequest, instant: dict[str, Any]) -> list[dict[str, Any]]:
    """Ask the planning queue to trace each method; wait for its answer in Redis (cached by request hash)."""
    redis = getattr(request.app.state, "redis", None)
    if redis is None:
        raise HTTPException(503, detail="traced plans need Redis and a worker on the planning queue")
    payload = body.model_dump(mode="json")
    payload["dataset_tokens"] = instant["dataset_tokens"]
    payload["dataset"] = None
    key = TRACE_KEY.format(hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32])
    cached = await redis.get(key)
    if cached is None:
        await _planning_worker_free(redis)
        from worker.celery_app import celery_app  # celery only; no torch

        try:
            celery_app.send_task(PLAN_TRACE_TASK, args=[key, payload], queue="planning", retry=False)
        except Exception as exc:  # noqa: BLE001 - a broker failure is "cannot trace now", not a crash
            raise HTTPException(503, detail=f"could not reach the planning queue: {exc}") from exc
        deadline = asyncio.get_running_loop().time() + TRACE_WAIT_SECONDS
        while cached is None and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.25)
            cached = await redis.get(key)
    if cached is None:
        raise HTTPException(504, detail="the planning worker did not answer within a minute (a large model, many "
                                        "methods); it keeps tracing and caches the answer: ask again shortly. "
                                        "The instant estimate stands")
    result = json.loads(cached)
    if "error" in result:
        raise HTTPException(422, detail=[{"loc": ["body", "mode"], "msg": result["error"], "type": "value_error"}])
    return list(result["estimates"])
