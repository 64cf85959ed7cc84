"""Dependencies shared by routes, as `Annotated` aliases."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException
from sqlmodel import Session

from app.db import get_engine
from app.models import Job


def get_session() -> Iterator[Session]:
    with Session(get_engine()) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def get_job_or_404(job_id: str, session: SessionDep) -> Job:
    job = session.get(Job, job_id) if len(job_id) <= 64 else None
    if job is None:
        raise HTTPException(status_code=404, detail="job not found")
    return job


JobDep = Annotated[Job, Depends(get_job_or_404)]
