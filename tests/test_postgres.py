"""The production database: migrations and a whole job on a real PostgreSQL server (Debian's)."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest
from sqlmodel import Session, select

from app.models import Job, JobEvent
from tests.helpers.chaos_stack import chaos_stack, engine_of, submit, wait_status
from tests.helpers.api import job_body, read_events
from tests.helpers.stack import ROOT

pytestmark = pytest.mark.integration


def _alembic(database_url: str, data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TUNEDECK_DATA_DIR": str(data_dir), "TUNEDECK_DATABASE_URL": database_url}
    return subprocess.run([sys.executable, "-m", "alembic", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


def test_migrations_upgrade_match_the_models_and_downgrade_on_postgresql(postgres_database: str, tmp_path: Path) -> None:
    for step in (("upgrade", "head"), ("check",), ("downgrade", "base"), ("upgrade", "head")):
        result = _alembic(postgres_database, tmp_path, *step)
        assert result.returncode == 0, f"alembic {' '.join(step)}: {result.stdout}{result.stderr}"


def test_a_job_trains_and_streams_its_events_on_postgresql(postgres_database: str, tmp_path: Path) -> None:
    with chaos_stack(tmp_path, database_url=postgres_database) as stack, stack.client() as client:
        assert client.get("/healthz").json()["database"] == "ok"
        job_id = submit(client, job_body(hyperparameters={"max_steps": 4, "checkpoint_every": 2}))
        done = wait_status(client, job_id, {"succeeded", "failed", "cancelled"}, 240)
        assert done["status"] == "succeeded", done
        events = read_events(client, job_id)
        assert [e["id"] for e in events] == list(range(1, len(events) + 1))
        assert [e["data"]["step"] for e in events if e["event"] == "metric" and "loss" in e["data"]] == [1, 2, 3, 4]
        assert len(client.get(f"/api/v1/jobs/{job_id}/checkpoints").json()["data"]) == 2
        assert client.get(f"/api/v1/jobs/{job_id}/adapter").status_code == 200
        with Session(engine_of(stack)) as session:  # the rows are in PostgreSQL, not in a SQLite file
            assert session.get(Job, job_id).status == "succeeded"  # type: ignore[union-attr]
            stored = session.exec(select(JobEvent.seq).where(JobEvent.job_id == job_id).order_by(JobEvent.seq)).all()
        assert list(stored) == [e["id"] for e in events]
        assert not (tmp_path / "tunedeck.db").exists()


def test_open_event_streams_hold_no_database_connection(postgres_database: str, tmp_path: Path) -> None:
    """40 watchers, more than the API's pool of 30 PostgreSQL connections: pages still answer at once,
    and no connection sits idle in a transaction for the length of a stream."""


    watchers = 40
    with chaos_stack(tmp_path, worker=False, database_url=postgres_database) as stack, stack.client() as client:
        job_id = submit(client, job_body())  # no worker: it stays queued, and its streams stay open
        opened = threading.Barrier(watchers + 1)
        stop = threading.Event()

        def watch() -> None:
            with stack.client(timeout=120) as own, own.stream("GET", f"/api/v1/jobs/{job_id}/events") as response:
                lines = response.iter_lines()
                next(line for line in lines if line.startswith("id: "))  # the stored "queued" event
                opened.wait()
                stop.wait()

        threads = [threading.Thread(target=watch, daemon=True) for _ in range(watchers)]
        for thread in threads:
            thread.start()
        try:
            opened.wait(timeout=60)
        except threading.BrokenBarrierError:
            pytest.fail(f"{watchers} streams did not all open in 60 s: open streams hold the API's pooled connections")
        try:
            started = time.monotonic()
            assert client.get("/api/v1/jobs").status_code == 200
            assert client.get(f"/jobs/{job_id}").status_code == 200
            assert time.monotonic() - started < 10, "pages waited for a pooled connection"
            admin_url = postgres_database.replace("postgresql+psycopg", "postgresql")
            with psycopg.connect(admin_url) as connection:
                idle = connection.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                                          " AND state = 'idle in transaction'").fetchone()
            assert idle == (0,)
        finally:
            stop.set()
