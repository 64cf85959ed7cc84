"""Stored plans: the plans a user asked to keep (Save on the page, or POST /api/v1/plan), owned like a job.

Why store them: a user compares today's plan with last week's (a price
changed, a new GPU was added) and reopens the one a job was launched from.
Why only on request, and once: the page re-plans on every field change, and
storing each of those buried the plans worth keeping under dozens of
near-identical rows. The same request with the same answer saved again is
the same plan, moved to the top (its time updated); a different answer (a
price changed since) is a new plan, so history stays comparable.
Another user's plan answers 404 as if it did not exist (checked in app/api/deps.py);
each user's list holds their own plans only, an admin's too (everyone's is a
separate, labelled view).
"""
from __future__ import annotations

import json
from typing import Any

from sqlalchemy import func
from sqlmodel import Session, select

from app.models import PlanRecord, User, utcnow

SAME_LABEL_SCAN = 200  # how many of the owner's plans with the same label are compared for a duplicate


def plan_label(request: dict[str, Any]) -> str:
    if request.get("model"):
        return str(request["model"])[:255]
    config = request.get("config") or {}
    return f"config.json ({config.get('model_type', 'unknown')})"[:255]


def _same_plan(session: Session, owner: User, label: str, mode: str, request: dict[str, Any],
               result: dict[str, Any]) -> PlanRecord | None:
    stmt = (select(PlanRecord).where(PlanRecord.owner_id == owner.id, PlanRecord.label == label,
                                     PlanRecord.mode == mode)
            .order_by(PlanRecord.created_at.desc()).limit(SAME_LABEL_SCAN))  # type: ignore[attr-defined]
    request, result = json.loads(json.dumps(request)), json.loads(json.dumps(result))  # as the JSON column reads back
    return next((r for r in session.exec(stmt) if r.request == request and r.result == result), None)


def store_plan(session: Session, owner: User | None, request: dict[str, Any], result: dict[str, Any]) -> PlanRecord:
    """Store a plan; the same request with the same answer stored before is that record, its time now."""
    label, mode = plan_label(request), str(request.get("mode", "instant"))
    record = _same_plan(session, owner, label, mode, request, result) if owner is not None else None
    if record is not None:
        record.created_at = utcnow()
    else:
        record = PlanRecord(owner_id=owner.id if owner else None, label=label, mode=mode, request=request,
                            result=result)
    session.add(record)
    session.commit()
    session.refresh(record)
    return record


def list_plans(session: Session, user: User, offset: int = 0, limit: int = 50, all_users: bool = False
               ) -> tuple[list[PlanRecord], int]:
    """The user's own plans, newest first; `all_users` (admins' separate view): everyone's."""
    conditions = [] if all_users and user.is_admin else [PlanRecord.owner_id == user.id]
    count = session.exec(select(func.count()).select_from(PlanRecord).where(*conditions)).one()
    stmt = (select(PlanRecord).where(*conditions)
            .order_by(PlanRecord.created_at.desc()).offset(offset).limit(limit))  # type: ignore[attr-defined]
    return list(session.exec(stmt)), int(count)


def owner_emails(session: Session, records: list[PlanRecord]) -> dict[str, str]:
    """Owner id -> email, for the all-users view (which says whose each plan is)."""
    ids = {r.owner_id for r in records if r.owner_id}
    if not ids:
        return {}
    users = session.exec(select(User).where(User.id.in_(ids)))  # type: ignore[attr-defined]
    return {u.id: u.email for u in users}


def summary(record: PlanRecord, emails: dict[str, str] | None = None) -> dict[str, Any]:
    """One line of the list: what was asked and the badges it got (with its owner in the all-users view)."""
    request = record.request
    return {"id": record.id, "label": record.label, "mode": record.mode, "created_at": record.created_at,
            "owner_id": record.owner_id,
            "owner_email": (emails or {}).get(record.owner_id or "") if emails is not None else None,
            "methods": request.get("methods"), "seq_len": request.get("seq_len"),
            "batch_size": request.get("batch_size"), "badges": record.result.get("badges", {})}
