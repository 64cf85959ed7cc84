"""The live event stream of a job (SSE)."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse

from app.api.deps import StreamJobDep
from app.events.frames import SSE_HEADERS, resume_point
from app.events.sse import job_events, json_frames

router = APIRouter(prefix="/jobs", tags=["jobs"])


@router.get("/{job_id}/events", response_class=StreamingResponse)
async def get_events(
    job: StreamJobDep,
    request: Request,
    last_event_id: Annotated[str | None, Header()] = None,
    after: Annotated[int | None, Query(ge=0, description="Same as Last-Event-ID")] = None,
) -> StreamingResponse:
    """`text/event-stream` of `log`, `metric` and `status` events; ends after the terminal status."""
    start = resume_point(last_event_id, after)
    return StreamingResponse(
        json_frames(job_events(request.app.state.live, job.id, start)),
        media_type="text/event-stream",
        headers=SSE_HEADERS,
    )
