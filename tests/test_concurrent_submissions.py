"""50 job submissions at once from 10 users: every one stored once, owned by its user, queued once.

A real API process on SQLite (WAL, busy timeout), then on PostgreSQL, and a
real Redis; no worker, so nothing trains and every message stays in the queue
where it can be counted.
"""
from __future__ import annotations

import base64
import json
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
from redis import Redis
from sqlmodel import Session, select

from app.auth.users import create_token, create_user
from app.models import Job, User
from tests.helpers.chaos_stack import chaos_stack, engine_of
from tests.helpers.api import job_body

pytestmark = [pytest.mark.chaos, pytest.mark.integration]

USERS = 10
JOBS_PER_USER = 5


def _queued_job_ids(redis: Redis, queue: str = "cpu") -> list[str]:
    """Job ids of the task messages waiting in a Celery queue (kombu's Redis list)."""
    ids = []
    for raw in redis.lrange(queue, 0, -1):
        message = json.loads(raw)
        args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
        ids.append(args[0])
    return ids


@pytest.fixture(params=["sqlite", "postgresql"])
def database_settings(request: pytest.FixtureRequest) -> dict[str, str]:
    """Settings for chaos_stack: the default SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return {}
    return {"database_url": request.getfixturevalue("postgres_database")}


@pytest.mark.timeout(180)
def test_fifty_simultaneous_submissions_from_ten_users_are_stored_once_each(tmp_path, database_settings) -> None:  # type: ignore[no-untyped-def]
    with chaos_stack(tmp_path, worker=False, **database_settings) as stack:
        engine = engine_of(stack)
        tokens: dict[str, str] = {}
        with Session(engine) as session:
            for i in range(USERS):
                user = create_user(session, f"user{i}@example.com", f"password-{i}-long-enough")
                tokens[user.id] = create_token(session, user, "concurrency test")[1]

        submissions = [(uid, f"{uid[:8]}-job-{k}") for uid in tokens for k in range(JOBS_PER_USER)]
        start = threading.Barrier(len(submissions))

        def submit(item: tuple[str, str]) -> tuple[str, str, int, str]:
            user_id, name = item
            with stack.client(timeout=60, token=tokens[user_id]) as client:
                start.wait()
                response = client.post("/api/v1/jobs", json=job_body(name=name, hyperparameters={"max_steps": 5}))
            job_id = response.json().get("id", "") if response.status_code == 201 else response.text
            return user_id, name, response.status_code, job_id

        with ThreadPoolExecutor(max_workers=len(submissions)) as pool:
            results = list(pool.map(submit, submissions))

        assert [r for r in results if r[2] != 201] == [], "some submissions failed"
        returned_ids = [r[3] for r in results]
        assert len(set(returned_ids)) == len(submissions)

        with Session(engine) as session:
            rows = list(session.exec(select(Job)))
            admins = list(session.exec(select(User).where(User.is_admin)))
        assert len(rows) == len(submissions)
        by_id = {row.id: row for row in rows}
        assert set(by_id) == set(returned_ids)
        assert Counter(row.name for row in rows) == Counter(name for _, name in submissions)
        for user_id, name, _, job_id in results:
            assert by_id[job_id].owner_id == user_id and by_id[job_id].name == name
            assert by_id[job_id].status == "queued" and by_id[job_id].enqueued_at is not None

        # Each user sees exactly their own five through the API; the admin sees all fifty.
        for user_id, token in tokens.items():
            with stack.client(token=token) as client:
                listed = client.get("/api/v1/jobs", params={"limit": 500}).json()
            assert listed["count"] == JOBS_PER_USER
            assert {j["id"] for j in listed["data"]} == {r[3] for r in results if r[0] == user_id}
        with stack.client() as client:
            assert client.get("/api/v1/jobs", params={"limit": 500}).json()["count"] == len(submissions)
        assert admins and all(row.owner_id != admins[0].id for row in rows)

        # And each job was handed to the broker exactly once.
        queued = _queued_job_ids(Redis.from_url(stack.redis_url))
        assert Counter(queued) == Counter(returned_ids)
