"""Webhook endpoints: `fine_tuning.job.succeeded | failed | cancelled`, signed (Standard Webhooks)."""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, status
from pydantic import BaseModel, ConfigDict, Field

from app.api.deps import CurrentUser, SessionDep
from app.webhooks.endpoints import (EndpointRefused, deliveries, delivery_public, endpoints_of, owned, public,
                                    register, remove)

router = APIRouter(prefix="/webhooks", tags=["webhooks"])


class EndpointCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=8, max_length=2000, description="http(s) URL that receives the POSTs")
    events: list[str] | None = Field(None, description="Event types (default: all three)")
    allow_local: bool = Field(False, description="Admins only: allow loopback and link-local addresses")


@router.post("", status_code=status.HTTP_201_CREATED)
def create_endpoint(body: EndpointCreate, session: SessionDep, user: CurrentUser) -> dict[str, Any]:
    """Register an endpoint; the answer carries its signing `secret`, shown this once."""
    try:
        endpoint = register(session, user, body.url, body.events, body.allow_local)
    except EndpointRefused as exc:
        raise HTTPException(422, detail=[{"loc": ["body", exc.field], "msg": exc.message, "type": "value_error"}]) from None
    return public(endpoint, secret=True)


@router.get("")
def list_endpoints(session: SessionDep, user: CurrentUser) -> dict[str, Any]:
    rows = endpoints_of(session, user)
    return {"data": [public(e) for e in rows], "count": len(rows)}


@router.delete("/{endpoint_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_endpoint(endpoint_id: str, session: SessionDep, user: CurrentUser) -> None:
    endpoint = owned(session, user, endpoint_id)
    if endpoint is None:
        raise HTTPException(404, detail="no such webhook endpoint")
    remove(session, endpoint)


@router.get("/{endpoint_id}/deliveries")
def list_deliveries(endpoint_id: str, session: SessionDep, user: CurrentUser) -> dict[str, Any]:
    """The endpoint's deliveries, newest first: pending (with the next attempt's time), delivered or failed."""
    if owned(session, user, endpoint_id) is None:
        raise HTTPException(404, detail="no such webhook endpoint")
    rows = deliveries(session, endpoint_id)
    return {"data": [delivery_public(r) for r in rows], "count": len(rows)}
