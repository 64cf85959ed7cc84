"""Redis restarts with its data gone while one job runs and one waits in the queue.

Expected: the queued job's message is lost with Redis, and the reconciler
sends it again from the database; the running job keeps training, and a
watcher on its event stream sees every event once, in order, to the end;
neither job ever runs twice or beside itself.
"""
from __future__ import annotations

import base64
import json
import shutil
import threading
import time
from datetime import UTC

import pytest
from redis import Redis

from tests.helpers.chaos_stack import (
    chaos_stack,
    get_job,
    job_row,
    stored_events,
    submit,
    trainer_pids,
    wait_status,
    wait_step,
)
from tests.helpers.api import job_body, read_events
from tests.helpers.stack import wait_until

pytestmark = [pytest.mark.chaos, pytest.mark.integration]


@pytest.mark.timeout(300)
def test_redis_restart_without_data_loses_no_job_and_no_event(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with chaos_stack(tmp_path) as stack, stack.client(timeout=60) as client:
        running = submit(client, job_body(hyperparameters={"max_steps": 30, "batch_size": 4, "checkpoint_every": 0}))
        watched: list[dict] = []
        watcher = threading.Thread(target=lambda: watched.extend(read_events(client, running, timeout=240)))
        watcher.start()
        wait_step(client, running, 3, 120)
        queued = submit(client, job_body(hyperparameters={"max_steps": 3, "batch_size": 4, "checkpoint_every": 0}))
        redis = Redis.from_url(stack.redis_url)
        wait_until(lambda: redis.llen("cpu") >= 1, 10, "the second job's message is not in the queue")
        lost_task = _task_id_for(redis, queued)

        server = stack.procs.pop("redis")
        server.kill()  # no shutdown, no save
        server.wait(timeout=10)
        shutil.rmtree(stack.data_dir / "redis")  # and its append-only file is gone: an empty Redis comes back
        step_at_restart = get_job(client, running)["progress"]["step"]
        restarted_at = time.time()
        stack.start_redis()

        most_trainers = 0
        while get_job(client, running)["status"] == "running":
            most_trainers = max(most_trainers, len(trainer_pids(stack)))
            time.sleep(0.5)
        first = wait_status(client, running, {"succeeded", "failed", "cancelled"}, 10)
        second = wait_status(client, queued, {"succeeded", "failed", "cancelled"}, 150)
        watcher.join(timeout=60)

    assert first["status"] == "succeeded" and first["attempt"] == 1, first
    assert first["progress"]["step"] == 30 > step_at_restart  # it kept training through the restart
    assert second["status"] == "succeeded" and second["attempt"] == 1, second
    assert second["started_at"] >= first["finished_at"]  # one job at a time on the one worker
    assert most_trainers <= 1

    # Its message was lost with Redis and never delivered; the reconciler sent it again after the restart.
    worker_log = (stack.logs["worker"]).read_text(errors="replace")
    assert lost_task not in worker_log
    enqueued_at = job_row(stack, queued).enqueued_at
    assert enqueued_at is not None and enqueued_at.replace(tzinfo=UTC).timestamp() >= restarted_at

    for job_id in (running, queued):
        seqs = [e.seq for e in stored_events(stack, job_id)]
        assert seqs == list(range(1, len(seqs) + 1))
        runs = [e.data for e in stored_events(stack, job_id) if e.kind == "status" and e.data["status"] == "running"]
        assert [r["attempt"] for r in runs] == [1]

    # The watcher saw every stored event of the running job exactly once, in order, to its end.
    assert not watcher.is_alive()
    assert [e["id"] for e in watched] == [e.seq for e in stored_events(stack, running)]
    assert watched[-1]["event"] == "status" and watched[-1]["data"]["status"] == "succeeded"


def _task_id_for(redis: Redis, job_id: str) -> str:
    """The Celery task id of the message for `job_id` waiting in the cpu queue."""
    for raw in redis.lrange("cpu", 0, -1):
        message = json.loads(raw)
        if json.loads(base64.b64decode(message["body"]))[0] == [job_id]:
            return str(message["headers"]["id"])
    raise AssertionError(f"no message for job {job_id} in the queue")
