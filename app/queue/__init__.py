"""The queue as both sides see it: the Celery client, the task names and the queue names.

The API sends tasks by name through `celery_client()`; the worker
(worker/celery_app.py) runs this same Celery app, with its tasks registered
under these names. Configured for long jobs that must not be lost
(RELIABILITY.md §2.4): late acks and re-delivery when a worker dies, one task
at a time per worker, JSON only (never pickle).

Celery is imported here, at module level: importing it for the first time from
several request threads at once fails inside celery's lazy module ("cannot
import name 'Celery'"), which answered 500 to concurrent submissions. The
client itself is built on first use, from app.settings.
"""
from __future__ import annotations

import threading
from functools import cache

from celery import Celery
from kombu import Queue

_CLIENT_LOCK = threading.Lock()

# Task names: the message says which task, and carries only ids and plain JSON.
RUN_JOB_TASK = "tunedeck.run_job"
PLAN_TRACE_TASK = "tunedeck.plan_trace"
# An admin's GGUF import (app/catalog/model_imports.py): on the planning queue, which every worker consumes.
IMPORT_MODEL_TASK = "tunedeck.import_model"

CPU_QUEUE = "cpu"
PLANNING_QUEUE = "planning"
# In a worker's queue list (`-Q`, TUNEDECK_WORKER_QUEUES): the memory classes of its accelerator.
AUTO_QUEUES = "auto"
# GPU memory classes, one queue each, with their size in GiB, smallest first (app.routing routes by them).
MEMORY_CLASSES: dict[str, int] = {"gpu-16": 16, "gpu-24": 24, "gpu-48": 48, "gpu-80": 80, "gpu-141": 141}
# Every queue the Celery app declares.
MEMORY_CLASS_QUEUES = (CPU_QUEUE, *MEMORY_CLASSES, PLANNING_QUEUE)

# The longest job we expect; a killed worker's message comes back after this.
VISIBILITY_TIMEOUT = 24 * 3600


def make_celery() -> Celery:
    from app.settings import get_settings

    settings = get_settings()
    app = Celery("tunedeck", broker=settings.resolved_redis_url)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_concurrency=1,
        worker_max_tasks_per_child=1,
        # A Redis restart must not stop training: the job row and its lease, not the
        # broker connection, decide who runs a job (RELIABILITY.md §2.3).
        worker_cancel_long_running_tasks_on_connection_loss=False,
        broker_connection_retry_on_startup=True,
        broker_transport_options={"visibility_timeout": VISIBILITY_TIMEOUT},
        task_default_queue=CPU_QUEUE,
        task_routes={PLAN_TRACE_TASK: {"queue": PLANNING_QUEUE}, IMPORT_MODEL_TASK: {"queue": PLANNING_QUEUE}},
        task_queues=[Queue(name) for name in MEMORY_CLASS_QUEUES],
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
    )
    return app


@cache
def celery_client() -> Celery:
    """This process's Celery app (one per process: the worker runs the same object).

    Built on first use, under a lock: the API's request threads may all ask at once."""
    with _CLIENT_LOCK:
        return make_celery()


__all__ = [
    "AUTO_QUEUES", "CPU_QUEUE", "IMPORT_MODEL_TASK", "MEMORY_CLASSES", "MEMORY_CLASS_QUEUES", "PLANNING_QUEUE",
    "PLAN_TRACE_TASK", "RUN_JOB_TASK", "VISIBILITY_TIMEOUT", "celery_client", "make_celery",
]
