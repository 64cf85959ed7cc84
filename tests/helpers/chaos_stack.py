"""A private Tunedeck for fault tests: its own Redis, database, worker and API, with short timers.

Fault tests kill and restart processes, so they never touch the shared
session stack. Lease and reconcile periods are seconds here (minutes in
production) so that a lost worker is noticed within a test's time budget.
"""
from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psutil
from sqlmodel import Session, select

from app.db import make_engine
from app.models import Job, JobEvent
from tests.helpers.stack import Stack, make_stack, wait_until

FAST_TIMERS = {
    "TUNEDECK_LEASE_SECONDS": "3",
    "TUNEDECK_RECONCILE_SECONDS": "1",
    "TUNEDECK_REQUEUE_AFTER_SECONDS": "2",
    "TUNEDECK_CANCEL_GRACE_SECONDS": "3",
}


@contextmanager
def chaos_stack(data_dir: Path, *, worker: bool = True, api: bool = True,
                worker_env: dict[str, str] | None = None, **settings: str) -> Iterator[Stack]:
    """Redis and migrations, then (optionally) one worker and the API; the demo model either way."""
    stack = make_stack(data_dir)
    stack.env.update(FAST_TIMERS)
    stack.env.update({f"TUNEDECK_{key.upper()}": str(value) for key, value in settings.items()})
    try:
        stack.start_redis()
        stack.run_cli("migrate")
        if worker:  # it builds the demo model before it reports ready, while the API starts
            stack.start_worker(extra_env=worker_env)
        else:
            stack.run_cli("init-demo")
        if api:
            stack.start_api()
        if worker and api:
            stack.wait_for_workers(1)
        yield stack
    finally:
        stack.stop_all()


def engine_of(stack: Stack) -> Any:
    """The stack's database: its TUNEDECK_DATABASE_URL (PostgreSQL tests), else the SQLite file."""
    return make_engine(stack.env.get("TUNEDECK_DATABASE_URL") or f"sqlite:///{stack.data_dir / 'tunedeck.db'}")


def job_row(stack: Stack, job_id: str) -> Job:
    with Session(engine_of(stack)) as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job


def stored_events(stack: Stack, job_id: str) -> list[JobEvent]:
    with Session(engine_of(stack)) as session:
        return list(session.exec(select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.seq)))


def submit(client: httpx.Client, body: dict[str, Any]) -> str:
    response = client.post("/api/v1/jobs", json=body)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def get_job(client: httpx.Client, job_id: str) -> dict[str, Any]:
    response = client.get(f"/api/v1/jobs/{job_id}")
    assert response.status_code == 200, response.text
    return dict(response.json())


def wait_job(client: httpx.Client, job_id: str, predicate: Any, timeout: float, what: str) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        try:
            job = get_job(client, job_id)
        except httpx.HTTPError:
            return None
        return job if predicate(job) else None

    try:
        return wait_until(check, timeout, what, interval=0.25)  # type: ignore[no-any-return]
    except AssertionError:
        raise AssertionError(f"{what}; job is now {get_job(client, job_id)}") from None


def wait_status(client: httpx.Client, job_id: str, statuses: set[str], timeout: float) -> dict[str, Any]:
    return wait_job(client, job_id, lambda j: j["status"] in statuses, timeout,
                    f"job {job_id} did not reach {sorted(statuses)} within {timeout}s")


def wait_step(client: httpx.Client, job_id: str, step: int, timeout: float) -> dict[str, Any]:
    return wait_job(client, job_id, lambda j: j["progress"]["step"] >= step and j["status"] == "running", timeout,
                    f"job {job_id} did not reach step {step} within {timeout}s")


def trainer_pids(stack: Stack, name: str = "worker") -> list[int]:
    """Training subprocesses (`python -m worker.train`) under the named worker."""
    proc = stack.procs.get(name)
    if proc is None:
        return []
    try:
        children = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    pids = []
    for child in children:
        try:
            if "worker.train" in child.cmdline():
                pids.append(child.pid)
        except psutil.Error:
            continue
    return pids


class Watcher(threading.Thread):
    """An EventSource-like client: reads `id:`/`event:`/`data:` frames, reconnects with Last-Event-ID."""

    def __init__(self, stack: Stack, job_id: str, deadline: float) -> None:
        super().__init__(daemon=True)
        self.stack, self.job_id, self.deadline = stack, job_id, deadline
        self.events: list[tuple[int, str, dict]] = []
        self.connections = 0
        self.ended = False

    def run(self) -> None:
        with self.stack.client(timeout=30) as client:
            while not self.ended and time.monotonic() < self.deadline:
                headers = {"Last-Event-ID": str(self.events[-1][0])} if self.events else {}
                try:
                    with client.stream("GET", f"/api/v1/jobs/{self.job_id}/events", headers=headers) as response:
                        if response.status_code != 200:
                            raise httpx.HTTPError(f"status {response.status_code}")
                        self.connections += 1
                        self._read(response)
                except httpx.HTTPError:
                    time.sleep(0.3)  # the server is away: try again, as a browser would

    def _read(self, response: httpx.Response) -> None:
        frame: dict[str, str] = {}
        for line in response.iter_lines():
            if line.startswith(":"):
                continue
            if line:
                key, _, value = line.partition(": ")
                frame[key] = value
                continue
            if "id" in frame:
                data = json.loads(frame["data"])
                self.events.append((int(frame["id"]), frame["event"], data))
                if frame["event"] == "status" and data.get("status") in {"succeeded", "failed", "cancelled"}:
                    self.ended = True
                    return
            frame = {}
