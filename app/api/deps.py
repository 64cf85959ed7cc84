"""Dependencies shared by routes and pages, as `Annotated` aliases: the session, the user, owned rows.

Ownership is checked here and only here: another user's job, dataset or plan
answers 404 (or, for a dataset counted by the planner, is not found), exactly
as if it did not exist.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from sqlmodel import Session

from app.auth.sessions import LoginRequired, session_user
from app.auth.visibility import can_see
from app.auth.users import user_for_token
from app.db import get_engine
from app.models import Job, PlanRecord, User
from app.planner.architecture import Architecture
from app.planner.db_catalog import DbCatalog
from app.planner.traced import TokenCounter


def get_session() -> Iterator[Session]:
    with Session(get_engine()) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def get_current_user(request: Request, session: SessionDep) -> User:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        user = user_for_token(session, header[7:].strip())
    else:
        user = session_user(request, session)
    if user is None:
        raise LoginRequired()
    request.state.user = user
    return user


CurrentUser = Annotated[User, Depends(get_current_user)]


def get_admin(user: CurrentUser) -> User:
    if not user.is_admin:
        raise HTTPException(403, detail="admins only")
    return user


AdminUser = Annotated[User, Depends(get_admin)]


def get_job_or_404(job_id: str, session: SessionDep, user: CurrentUser) -> Job:
    job = session.get(Job, job_id) if len(job_id) <= 64 else None
    if job is None or not (user.is_admin or job.owner_id == user.id):
        raise HTTPException(status_code=404, detail="job not found")
    return job


JobDep = Annotated[Job, Depends(get_job_or_404)]


def get_job_for_stream(job: JobDep, session: SessionDep) -> Job:
    """The job, for a response that streams for minutes or hours (events, downloads).

    FastAPI ends `yield` dependencies only after the response is sent, so the
    request's session would hold a pooled connection in an open transaction for
    the whole stream: 30 watchers would empty PostgreSQL's pool, and on SQLite
    an open reader stops the WAL from being checkpointed. The session is closed
    here; the job keeps the fields it loaded.
    """
    session.close()
    return job


StreamJobDep = Annotated[Job, Depends(get_job_for_stream)]


def get_plan_or_404(plan_id: str, session: SessionDep, user: CurrentUser) -> PlanRecord:
    """A stored plan the caller may see; another user's is 404."""
    record = session.get(PlanRecord, plan_id) if len(plan_id) <= 64 else None
    if record is None or not can_see(user, record.owner_id):
        raise HTTPException(404, detail="plan not found")
    return record


PlanDep = Annotated[PlanRecord, Depends(get_plan_or_404)]


def get_reopened_plan(session: SessionDep, user: CurrentUser, plan: str | None = None) -> PlanRecord | None:
    """The plan a page reopens (`?plan=<id>`): None without one, 404 if the caller may not see it."""
    return None if plan is None else get_plan_or_404(plan, session, user)


ReopenedPlanDep = Annotated[PlanRecord | None, Depends(get_reopened_plan)]


def get_plan_catalog(session: SessionDep) -> DbCatalog:
    """The database catalog (seeded from app/planner/data on first start, edited on /plan/catalog)."""
    return DbCatalog(session)


CatalogDep = Annotated[DbCatalog, Depends(get_plan_catalog)]


def get_dataset_tokens(request: Request) -> TokenCounter:
    """A stored dataset the caller may see: its normalised file, which the planner counts with the model's tokenizer.

    The API's auth dependency leaves the user on `request.state`; without one only shared datasets count.
    """
    user = getattr(request.state, "user", None)

    def count(dataset_id: str, arch: Architecture) -> Path | None:
        from app import storage
        from app.models import Dataset

        with Session(get_engine()) as session:
            row = session.get(Dataset, dataset_id)
        if row is None:
            return None
        if row.owner_id is not None and (user is None or not can_see(user, row.owner_id)):
            return None  # someone else's: as if it did not exist
        return storage.absolute(row.path)  # app.planner.service counts its rows (app.datasets.token_lengths)

    return count


DatasetTokensDep = Annotated[TokenCounter, Depends(get_dataset_tokens)]


async def get_model_import_or_404(import_id: str, request: Request, admin: AdminUser) -> dict[str, Any]:
    """Admins only: a GGUF import's record from Redis (404 when unknown or expired, 503 without Redis)."""
    from app.catalog.model_imports import QueueUnavailable, get_import

    try:
        record = await get_import(getattr(request.app.state, "redis", None), import_id)
    except QueueUnavailable as exc:
        raise HTTPException(503, detail=str(exc)) from None
    if record is None:
        raise HTTPException(404, detail="import not found")
    return record


ModelImportDep = Annotated[dict[str, Any], Depends(get_model_import_or_404)]
