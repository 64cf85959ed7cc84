"""The running attempt's lease on its job row.

The attempt renews `lease_expires_at` while it lives; if the renewal finds the
row owned by another attempt (the reconciler gave the job to someone else after
this worker looked dead), the attempt stops its trainer: one job never trains
twice at once.
"""
from __future__ import annotations

import logging
import threading
from datetime import timedelta
from typing import Self

from sqlalchemy import update
from sqlmodel import Session

from app.db import get_engine
from app.models import ACTIVE_STATUSES, Job, utcnow
from app.settings import get_settings

log = logging.getLogger(__name__)


def lease_until() -> object:
    return utcnow() + timedelta(seconds=get_settings().lease_seconds)


class LeaseKeeper:
    def __init__(self, job_id: str, attempt: int) -> None:
        self.job_id = job_id
        self.attempt = attempt
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{job_id}", daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def renew(self) -> bool:
        with Session(get_engine()) as session:
            result = session.exec(  # type: ignore[call-overload]
                update(Job)
                .where(Job.id == self.job_id, Job.attempt == self.attempt,
                       Job.status.in_(ACTIVE_STATUSES))  # type: ignore[attr-defined]
                .values(lease_expires_at=lease_until())
            )
            session.commit()
            return bool(result.rowcount == 1)

    def _run(self) -> None:
        interval = get_settings().lease_seconds / 3
        while not self._stop.wait(interval):
            try:
                if not self.renew():
                    log.warning("job %s: attempt %s lost its lease; stopping", self.job_id, self.attempt)
                    self.lost.set()
                    return
            except Exception as exc:  # noqa: BLE001 - a database hiccup: try again next beat
                log.warning("job %s: lease renewal failed: %s", self.job_id, exc)
