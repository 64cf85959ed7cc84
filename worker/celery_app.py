"""The Celery application, configured for long jobs that must not be lost.

Each line follows RELIABILITY.md §2.4: late acks and re-delivery when a worker
dies, one task at a time per worker, JSON only (never pickle).
"""
from __future__ import annotations

from celery import Celery
from kombu import Queue

from app.settings import get_settings

# The longest job we expect; a killed worker's message comes back after this.
VISIBILITY_TIMEOUT = 24 * 3600
MEMORY_CLASS_QUEUES = ("cpu", "gpu-16", "gpu-24", "gpu-48", "gpu-80", "gpu-141", "planning")


def make_celery() -> Celery:
    settings = get_settings()
    app = Celery("tunedeck", broker=settings.resolved_redis_url, include=["worker.tasks"])
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
        task_default_queue="cpu",
        task_routes={"tunedeck.plan_trace": {"queue": "planning"}},
        task_queues=[Queue(name) for name in MEMORY_CLASS_QUEUES],
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
    )
    return app


celery_app = make_celery()
