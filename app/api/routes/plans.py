"""Stored plans: list and reopen the plans a user computed (POST /api/v1/plan stores each one)."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from app.api.deps import CurrentUser, PlanDep, SessionDep
from app.planner.records import list_plans, summary
from app.schemas.plan import PlansPublic, PlanSummary, StoredPlan

router = APIRouter(prefix="/plans", tags=["plan"])


@router.get("", response_model=PlansPublic)
def get_plans(
    session: SessionDep, user: CurrentUser,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> PlansPublic:
    """The caller's plans, newest first (an admin sees everyone's)."""
    records, count = list_plans(session, user, offset=offset, limit=limit)
    return PlansPublic(data=[PlanSummary.model_validate(summary(r)) for r in records], count=count)


@router.get("/{plan_id}", response_model=StoredPlan)
def get_stored_plan(record: PlanDep) -> StoredPlan:
    """One stored plan: the request as sent and the answer it got. Another user's plan is 404."""
    return StoredPlan(id=record.id, label=record.label, mode=record.mode, created_at=record.created_at,
                      request=record.request, result={**record.result, "id": record.id})  # type: ignore[arg-type]
