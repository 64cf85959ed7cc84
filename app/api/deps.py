"""Dependencies shared by routes, as `Annotated` aliases: the session, the user, owned rows.

Ownership is checked here and only here: another user's job or dataset
answers 404, exactly as if it did not exist.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from sqlmodel import Session

from app.auth.sessions import LoginRequired, session_user
from app.auth.visibility import can_see  # noqa: F401 - re-exported for routes
from app.auth.users import user_for_token
from app.db import get_engine
from app.models import Job, User


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
