"""Registering, listing and removing a user's webhook endpoints, and reading their deliveries."""
from __future__ import annotations

from typing import Any

from sqlmodel import Session, select

from app.models import User, WebhookDelivery, WebhookEndpoint
from app.webhooks.outbox import EVENT_TYPES
from app.webhooks.signing import new_secret
from app.webhooks.targets import TargetRefused, check_target

MAX_ENDPOINTS = 20


class EndpointRefused(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field, self.message = field, message


def register(session: Session, user: User, url: str, events: list[str] | None, allow_local: bool) -> WebhookEndpoint:
    """A new endpoint (its secret is shown once, in what this returns)."""
    chosen = list(dict.fromkeys(events or EVENT_TYPES))
    unknown = [e for e in chosen if e not in EVENT_TYPES]
    if unknown:
        raise EndpointRefused("events", f"unknown event type {unknown[0]!r}: choose from {', '.join(EVENT_TYPES)}")
    if allow_local and not user.is_admin:
        raise EndpointRefused("allow_local", "only an admin may allow deliveries to loopback or link-local addresses")
    try:
        check_target(url, allow_local)
    except TargetRefused as exc:
        raise EndpointRefused("url", str(exc)) from None
    if len(endpoints_of(session, user)) >= MAX_ENDPOINTS:
        raise EndpointRefused("url", f"at most {MAX_ENDPOINTS} endpoints per user; delete one first")
    endpoint = WebhookEndpoint(owner_id=user.id, url=url, secret=new_secret(), events=chosen, allow_local=allow_local)
    session.add(endpoint)
    session.commit()
    session.refresh(endpoint)
    return endpoint


def endpoints_of(session: Session, user: User) -> list[WebhookEndpoint]:
    return list(session.exec(select(WebhookEndpoint).where(WebhookEndpoint.owner_id == user.id)
                             .order_by(WebhookEndpoint.created_at)).all())


def owned(session: Session, user: User, endpoint_id: str) -> WebhookEndpoint | None:
    endpoint = session.get(WebhookEndpoint, endpoint_id) if len(endpoint_id) <= 64 else None
    return endpoint if endpoint is not None and endpoint.owner_id == user.id else None


def remove(session: Session, endpoint: WebhookEndpoint) -> None:
    session.delete(endpoint)
    session.commit()


def deliveries(session: Session, endpoint_id: str, limit: int = 50) -> list[WebhookDelivery]:
    return list(session.exec(select(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint_id)
                             .order_by(WebhookDelivery.created_at.desc()).limit(limit)).all())  # type: ignore[attr-defined]


def public(endpoint: WebhookEndpoint, secret: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"id": endpoint.id, "url": endpoint.url, "events": endpoint.events,
                           "allow_local": endpoint.allow_local, "created_at": endpoint.created_at}
    if secret:
        out["secret"] = endpoint.secret
    return out


def delivery_public(row: WebhookDelivery) -> dict[str, Any]:
    return {"id": row.id, "job_id": row.job_id, "event_type": row.event_type, "status": row.status,
            "attempts": row.attempts, "last_status_code": row.last_status_code, "last_error": row.last_error,
            "next_attempt_at": row.next_attempt_at, "created_at": row.created_at, "delivered_at": row.delivered_at}
