"""Send what the outbox holds: each due delivery POSTed, signed, until a 2xx answer or its attempts are used.

Runs in every API process (started by the app's lifespan). A delivery is claimed before it is sent
(`locked_until`, in one conditional UPDATE), so two API replicas never send the same attempt; a
process that dies mid-send leaves the claim to expire and the delivery is sent again, with the same
`webhook-id` (receivers de-duplicate on it, as Standard Webhooks asks). Retries back off
exponentially from `TUNEDECK_WEBHOOK_RETRY_SECONDS`, capped at an hour; after
`TUNEDECK_WEBHOOK_MAX_ATTEMPTS` the delivery is `failed`, which the Settings page and the API show.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import dataclass
from datetime import timedelta

import httpx
from sqlalchemy import or_, update
from sqlmodel import Session, select
from starlette.concurrency import run_in_threadpool

from app.db import get_engine
from app.models import WebhookDelivery, WebhookEndpoint, utcnow
from app.settings import get_settings
from app.webhooks.signing import headers
from app.webhooks.targets import TargetRefused, check_target

log = logging.getLogger(__name__)
CLAIM_SECONDS = 60
POLL_SECONDS = 1.0
BATCH = 20
MAX_BACKOFF_SECONDS = 3600


@dataclass(frozen=True)
class Due:
    delivery_id: str
    attempt: int
    url: str
    secret: str
    allow_local: bool
    body: bytes


def claim_due(limit: int = BATCH) -> list[Due]:
    """Pending deliveries whose time has come and that no sender holds, claimed for CLAIM_SECONDS."""
    now = utcnow()
    claimed: list[Due] = []
    with Session(get_engine()) as session:
        rows = session.exec(select(WebhookDelivery).where(
            WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at <= now,
            or_(WebhookDelivery.locked_until.is_(None), WebhookDelivery.locked_until < now))  # type: ignore[union-attr, operator]
            .order_by(WebhookDelivery.next_attempt_at).limit(limit)).all()
        for row in rows:
            taken = session.exec(update(WebhookDelivery).where(  # type: ignore[call-overload]
                WebhookDelivery.id == row.id, WebhookDelivery.attempts == row.attempts,
                or_(WebhookDelivery.locked_until.is_(None), WebhookDelivery.locked_until < now))  # type: ignore[union-attr, operator]
                .values(locked_until=now + timedelta(seconds=CLAIM_SECONDS)))
            session.commit()
            if taken.rowcount != 1:
                continue
            endpoint = session.get(WebhookEndpoint, row.endpoint_id)
            if endpoint is None:  # deleted since: nobody to tell
                _finish(row.id, row.attempts, "failed", None, "the endpoint was deleted")
                continue
            body = json.dumps(row.payload, separators=(",", ":")).encode()
            claimed.append(Due(row.id, row.attempts + 1, endpoint.url, endpoint.secret, endpoint.allow_local, body))
    return claimed


def _finish(delivery_id: str, attempts: int, status: str, code: int | None, error: str | None) -> None:
    settings = get_settings()
    now = utcnow()
    values: dict[str, object] = {"attempts": attempts, "last_status_code": code, "last_error": error,
                                 "locked_until": None}
    if status == "delivered":
        values.update(status="delivered", delivered_at=now)
    elif attempts >= settings.webhook_max_attempts or status == "failed":
        values.update(status="failed")
    else:
        backoff = min(settings.webhook_retry_seconds * 2 ** (attempts - 1), MAX_BACKOFF_SECONDS)
        values.update(next_attempt_at=now + timedelta(seconds=backoff))
    with Session(get_engine()) as session:
        session.exec(update(WebhookDelivery).where(WebhookDelivery.id == delivery_id)  # type: ignore[call-overload]
                     .values(**values))
        session.commit()


async def send(client: httpx.AsyncClient, due: Due) -> None:
    """One attempt; its outcome stored (delivered, retried later, or failed)."""
    try:
        await run_in_threadpool(check_target, due.url, due.allow_local)
        response = await client.post(due.url, content=due.body,
                                     headers=headers(due.secret, due.delivery_id, int(time.time()), due.body))
    except TargetRefused as exc:
        await run_in_threadpool(_finish, due.delivery_id, due.attempt, "failed", None, f"refused: {exc}")
        return
    except httpx.HTTPError as exc:
        await run_in_threadpool(_finish, due.delivery_id, due.attempt, "retry", None, f"{type(exc).__name__}: {exc}")
        return
    ok = 200 <= response.status_code < 300
    await run_in_threadpool(_finish, due.delivery_id, due.attempt, "delivered" if ok else "retry",
                            response.status_code, None if ok else response.text[:500])


async def run_sender(stop: asyncio.Event) -> None:
    """The API process's sender: poll the outbox every second until `stop`."""
    async with httpx.AsyncClient(timeout=10.0, follow_redirects=False) as client:
        while not stop.is_set():
            try:
                for due in await run_in_threadpool(claim_due):
                    await send(client, due)
            except Exception:  # noqa: BLE001 - a database hiccup: the claims expire, the next tick retries
                log.exception("webhook sender")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=POLL_SECONDS)
