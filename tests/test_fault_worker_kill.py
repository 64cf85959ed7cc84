"""A worker killed with SIGKILL mid-training loses nothing; a second delivery of a job does nothing.

Real processes: redis-server, the API, Celery workers and the trainer. The
lease is 3 s here, so the reconciler notices the dead worker within seconds.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from celery import Celery

from tests.helpers.chaos_stack import (
    Watcher,
    chaos_stack,
    get_job,
    stored_events,
    submit,
    trainer_pids,
    wait_status,
    wait_step,
)
from tests.helpers.api import job_body
from tests.helpers.stack import ROOT, Stack, wait_until

pytestmark = [pytest.mark.chaos, pytest.mark.integration]

MAX_STEPS = 24


def _body(max_steps: int = MAX_STEPS) -> dict:
    return job_body(hyperparameters={"max_steps": max_steps, "batch_size": 4, "log_every": 1, "checkpoint_every": 2})


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with chaos_stack(tmp_path_factory.mktemp("worker-kill")) as s:
        yield s


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _run_attempt_directly(stack: Stack, job_id: str) -> str:
    """The task body, called as a duplicate delivery would call it, in its own process."""
    code = "import sys; from worker.runner import run_job; print(run_job(sys.argv[1], 'intruder@test'))"
    out = subprocess.run([sys.executable, "-c", code, job_id], env=stack.env, cwd=ROOT,
                         capture_output=True, text=True, timeout=60, check=True)
    return out.stdout.strip().splitlines()[-1]


def _running_events(stack: Stack, job_id: str) -> list[dict]:
    return [e.data for e in stored_events(stack, job_id) if e.kind == "status" and e.data.get("status") == "running"]


@pytest.mark.timeout(300)
def test_sigkilled_worker_job_is_requeued_and_succeeds(stack: Stack) -> None:
    with stack.client() as client:
        job_id = submit(client, _body())
        watcher = Watcher(stack, job_id, time.monotonic() + 280)  # a browser on the job page throughout
        watcher.start()
        wait_step(client, job_id, 6, 90)
        trainers = trainer_pids(stack)
        assert len(trainers) == 1, trainers
        killed_at = get_job(client, job_id)["progress"]["step"]

        worker = stack.procs.pop("worker")
        os.killpg(worker.pid, signal.SIGKILL)  # main process and pool child, no warm shutdown
        worker.wait(timeout=10)
        # The trainer runs in its own session; with its supervisor gone it must not train on beside the next attempt.
        wait_until(lambda: not _alive(trainers[0]), 30, "the orphaned trainer kept running")
        assert get_job(client, job_id)["status"] == "running"  # the database does not know yet

        stack.start_worker("worker2")
        done = wait_status(client, job_id, {"succeeded", "failed", "cancelled"}, 180)
        watcher.join(timeout=30)

    assert done["status"] == "succeeded", done
    assert done["attempt"] == 2
    assert done["worker"].startswith("worker2@")
    assert done["progress"] == {"step": MAX_STEPS, "total": MAX_STEPS}
    assert done["downloads"], done

    events = stored_events(stack, job_id)
    seqs = [e.seq for e in events]
    assert seqs == list(range(1, len(seqs) + 1)), "event history has gaps or duplicates"
    # What the live watcher saw across the kill is exactly the stored history: no event number reused.
    assert watcher.ended
    assert watcher.events == [(e.seq, e.kind, e.data) for e in events]
    statuses = [e.data for e in events if e.kind == "status"]
    assert [s["attempt"] for s in statuses if s["status"] == "running"] == [1, 2]
    requeue = [s for s in statuses if s["status"] == "queued" and s.get("reason") == "worker lost"]
    assert len(requeue) == 1
    # Attempt 2 resumed from the last checkpoint attempt 1 wrote (every 2 steps), not from step 1.
    lost_at = next(e.seq for e in events if e.kind == "status" and e.data.get("reason") == "worker lost")
    first_attempt = [e.data for e in events if e.seq < lost_at]
    saved = [d["checkpoint"]["step"] for d in first_attempt if isinstance(d.get("checkpoint"), dict)]
    last_step = max(d["step"] for d in first_attempt if "step" in d and "total" in d)
    metrics = [e.data for e in events if e.kind == "metric"]
    resumed = [i for i, m in enumerate(metrics) if m.get("resumed")]
    assert len(resumed) == 1, "attempt 2 did not resume from a checkpoint"
    second = metrics[resumed[0]:]
    resumed_from = second[0]["step"] - 1
    assert saved and resumed_from % 2 == 0 and max(saved) <= resumed_from <= last_step, (saved, resumed_from)
    assert killed_at <= last_step
    assert [m["step"] for m in second] == list(range(second[0]["step"], MAX_STEPS + 1))


@pytest.mark.timeout(240)
def test_second_delivery_of_running_or_finished_job_does_nothing(stack: Stack) -> None:
    if "worker" not in stack.procs and "worker2" not in stack.procs:
        stack.start_worker()
    worker_name = "worker2" if "worker2" in stack.procs else "worker"
    broker = Celery(broker=stack.redis_url)
    with stack.client() as client:
        job_id = submit(client, _body(max_steps=30))
        wait_step(client, job_id, 1, 120)
        running = get_job(client, job_id)
        assert running["attempt"] == 1

        # A duplicate while it runs: claimed by nobody, no second trainer.
        assert _run_attempt_directly(stack, job_id) == "skipped"
        assert get_job(client, job_id)["status"] == "running"  # it was a duplicate of a running job
        log = Path(stack.logs[worker_name])
        pattern = re.compile(r"succeeded in [\d.]+s: 'skipped'")
        skipped_before = len(pattern.findall(log.read_text(errors="replace")))
        for _ in range(2):  # and two more messages for the same id, delivered after it ends
            broker.send_task("tunedeck.run_job", args=[job_id], queue="cpu")
        assert len(trainer_pids(stack, worker_name)) == 1
        assert get_job(client, job_id)["worker"] == running["worker"]

        done = wait_status(client, job_id, {"succeeded", "failed", "cancelled"}, 120)
        assert done["status"] == "succeeded", done
        wait_until(lambda: len(pattern.findall(log.read_text(errors="replace"))) >= skipped_before + 2, 60,
                   "the duplicate messages were not delivered")
        history = len(stored_events(stack, job_id))
        assert _run_attempt_directly(stack, job_id) == "skipped"  # a finished job, delivered again

        after = get_job(client, job_id)
    assert after["attempt"] == 1 and after["status"] == "succeeded"
    assert after["finished_at"] == done["finished_at"]
    assert len(stored_events(stack, job_id)) == history
    assert [s["attempt"] for s in _running_events(stack, job_id)] == [1]


@pytest.mark.timeout(240)
def test_killed_pool_child_job_resumes_on_the_surviving_worker(stack: Stack) -> None:
    """Only the prefork child dies (the OOM killer's usual pick): Celery re-delivers at once, that
    delivery finds the job still leased and does nothing, and once the lease runs out the job resumes."""
    if "worker" not in stack.procs and "worker2" not in stack.procs:
        stack.start_worker()
    name = "worker2" if "worker2" in stack.procs else "worker"
    with stack.client() as client:
        job_id = submit(client, _body())
        wait_step(client, job_id, 4, 120)
        main = psutil.Process(stack.procs[name].pid)
        trainers = trainer_pids(stack, name)
        pool = [c for c in main.children() if c.pid not in trainers]
        assert len(pool) == 1, pool
        pool[0].send_signal(signal.SIGKILL)
        done = wait_status(client, job_id, {"succeeded", "failed", "cancelled"}, 180)

    assert done["status"] == "succeeded", done
    assert done["attempt"] == 2 and done["worker"].startswith(f"{name}@")
    assert stack.procs[name].poll() is None  # the worker itself lived on
    assert "exited with 'signal 9 (SIGKILL)'" in Path(stack.logs[name]).read_text(errors="replace")
    events = stored_events(stack, job_id)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert [e.data["attempt"] for e in events if e.kind == "status" and e.data["status"] == "running"] == [1, 2]
    assert [e.data["step"] > 1 for e in events if e.kind == "metric" and e.data.get("resumed")] == [True]

