"""The job page's buttons: Cancel, Pause, Resume, Retry, Retry from scratch, and Clone.

Each does what its API route does (`app.jobs.crud`, the same rules: a job that cannot be retried in
its state is refused with the reason, shown where the buttons are) and answers the status area again,
so the buttons follow the job's state. Clone opens the new-job form filled with the job's settings.
"""
from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from app.api.deps import JobDep, SessionDep
from app.jobs.crud import cancel_job, pause_job, retry_job
from app.models import Job, JobStatus
from app.planner.launch_link import _option_text
from app.web.forms import FIELDS
from app.web.templating import templates

router = APIRouter()


def _status(request: Request, job: Job, refused: str | None = None) -> HTMLResponse:
    return templates.TemplateResponse(request, "partials/job_status.html",
                                      {"status": job.status, "job_id": job.id, "refused": refused, "oob": True})


@router.post("/jobs/{job_id}/cancel", response_class=HTMLResponse)
def cancel_from_page(request: Request, job: JobDep, session: SessionDep) -> HTMLResponse:
    return _status(request, cancel_job(session, job))


@router.post("/jobs/{job_id}/pause", response_class=HTMLResponse)
def pause_from_page(request: Request, job: JobDep, session: SessionDep) -> HTMLResponse:
    if job.status not in (JobStatus.QUEUED, JobStatus.RUNNING):
        return _status(request, job, f"only a queued or running job can be paused (this one is {job.status})")
    return _status(request, pause_job(session, job))


@router.post("/jobs/{job_id}/retry", response_class=HTMLResponse)
def retry_from_page(request: Request, job: JobDep, session: SessionDep, fresh: bool = False) -> HTMLResponse:
    """Retry resumes from the last checkpoint (a paused job: Resume); `fresh` starts over."""
    retried = retry_job(session, job, fresh=fresh)
    if retried is None:
        return _status(request, job, f"only a failed, cancelled or paused job can be retried (this one is {job.status})")
    response = _status(request, retried)
    # The page's live stream ended with the job; a new attempt is a new stretch of events: reload to follow it.
    response.headers["HX-Refresh"] = "true"
    return response


def clone_fields(job: Job) -> dict[str, str]:
    """The job's settings as the new-job form's fields (its options by name, lists comma-joined)."""
    config: dict[str, Any] = job.config or {}
    fields: dict[str, str] = {}
    for field, path in FIELDS.items():
        node: Any = config
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        if (text := _option_text(node)) is not None:
            fields[field] = text
    for name, value in (config.get("method_config") or {}).items():
        if (text := _option_text(value)) is not None:
            fields[name] = text
    fields["name"] = f"{job.name} (copy)"
    return fields


@router.get("/jobs/{job_id}/clone")
def clone(job: JobDep) -> RedirectResponse:
    """The new-job form, filled with this job's settings (nothing is created until Launch)."""
    return RedirectResponse("/jobs/new?" + urlencode(clone_fields(job)), status_code=303)
