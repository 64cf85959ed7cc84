"""The planner: every method's memory, time and cost before launch."""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request
from starlette.concurrency import run_in_threadpool

from app.api.deps import CatalogDep, CurrentUser, DatasetTokensDep, SessionDep
from app.planner.fit import fit_request
from app.planner.records import store_plan
from app.planner.service import PlanError, catalog_listing
from app.planner.traced import TraceUnavailable, compute_plan
from app.schemas.plan import FitRequest, FitResponse, PlanRequest, PlanResponse

router = APIRouter(prefix="/plan", tags=["plan"])


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
    try:
        answer = await compute_plan(body, getattr(request.app.state, "redis", None), catalog, dataset_tokens)
    except PlanError as exc:
        raise _unprocessable(exc) from exc
    except TraceUnavailable as exc:
        raise HTTPException(exc.status_code, detail=exc.detail) from exc
    record = await run_in_threadpool(store_plan, session, user, body.model_dump(mode="json", exclude_none=True), answer)
    return {**answer, "id": record.id}


@router.post("/fit", response_model=FitResponse)
def post_fit(body: FitRequest, catalog: CatalogDep) -> dict[str, Any]:
    """Make it fit: the same sequences per step, split, stepped and checkpointed to fit one GPU."""
    try:
        fit = fit_request(body, catalog)
    except PlanError as exc:
        raise _unprocessable(exc) from exc
    gpu = catalog.gpu(body.gpus[0])  # found: fit_request resolved it
    return {"method": body.methods[0], "gpu": gpu.name if gpu else body.gpus[0], **fit.public()}
