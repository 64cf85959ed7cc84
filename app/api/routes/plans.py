"""Stored plans: list and reopen the plans a user stored (POST /api/v1/plan stores each one, once)."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query

from app.api.deps import CurrentUser, PlanDep, SessionDep
from app.planner.records import list_plans, owner_emails, summary
from app.schemas.plan import PlansPublic, PlanSummary, StoredPlan

router = APIRouter(prefix="/plans", tags=["plan"])


@router.get("", response_model=PlansPublic)
def get_plans(
    session: SessionDep, user: CurrentUser,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    all_users: Annotated[bool, Query(description="Admins only: every user's plans, each with its owner")] = False,
) -> PlansPublic:
    """The caller's own plans, newest first (an admin's too; `all_users=true` lists everyone's)."""
    if all_users and not user.is_admin:
        raise HTTPException(403, detail="only an admin lists all users' plans")
    records, count = list_plans(session, user, offset=offset, limit=limit, all_users=all_users)
    emails = owner_emails(session, records) if all_users else None
    return PlansPublic(data=[PlanSummary.model_validate(summary(r, emails)) for r in records], count=count)


@router.get("/{plan_id}", response_model=StoredPlan)
def get_stored_plan(record: PlanDep) -> StoredPlan:
    """One stored plan: the request as sent and the answer it got. Another user's plan is 404."""
    return StoredPlan(id=record.id, label=record.label, mode=record.mode, created_at=record.created_at,
                      request=record.request, result={**record.result, "id": record.id})  # type: ignore[arg-type]
