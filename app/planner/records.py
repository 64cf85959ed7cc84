"""Stored plans: every plan computed through the API or the page, owned like a job.

Why store them: a user compares today's plan with last week's (a price
changed, a new GPU was added) and reopens the one a job was launched from.
Another user's plan answers 404 as if it did not exist (checked in app/api/deps.py).
"""
from __future__ import annotations

from typing import Any

from sqlalchemy import func
from sqlmodel import Session, select

from app.models import PlanRecord, User


def plan_label(request: dict[str, Any]) -> str:
    if request.get("model"):
        return str(request["model"])[:255]
    config = request.get("config") or {}
    return f"config.json ({config.get('model_type', 'unknown')})"[:255]


def store_plan(session: Session, owner: User | None, request: dict[str, Any], result: dict[str, Any]) -> PlanRecord:
    """Store a plan; the same request asked again right after (a page reload) reuses the last record."""
    if owner is not None:
        last = session.exec(select(PlanRecord).where(PlanRecord.owner_id == owner.id)
                            .order_by(PlanRecord.created_at.desc()).limit(1)).first()  # type: ignore[attr-defined]
        if last is not None and last.request == request and last.result == result:
            return last
    record = PlanRecord(owner_id=owner.id if owner else None, label=plan_label(request),
                        mode=str(request.get("mode", "instant")), request=request, result=result)
    session.add(record)
    session.commit()
    session.refresh(record)
    return record


def list_plans(session: Session, user: User, offset: int = 0, limit: int = 50) -> tuple[list[PlanRecord], int]:
    """The user's plans (an admin's: everyone's), newest first."""
    conditions = [] if user.is_admin else [PlanRecord.owner_id == user.id]
    count = session.exec(select(func.count()).select_from(PlanRecord).where(*conditions)).one()
    stmt = (select(PlanRecord).where(*conditions)
            .order_by(PlanRecord.created_at.desc()).offset(offset).limit(limit))  # type: ignore[attr-defined]
    return list(session.exec(stmt)), int(count)


def summary(record: PlanRecord) -> dict[str, Any]:
    """One line of the list: what was asked and the badges it got."""
    request = record.request
    return {"id": record.id, "label": record.label, "mode": record.mode, "created_at": record.created_at,
            "methods": request.get("methods"), "seq_len": request.get("seq_len"),
            "batch_size": request.get("batch_size"), "badges": record.result.get("badges", {})}
