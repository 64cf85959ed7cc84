"""Celery tasks. They carry a job id and nothing else; the database holds the rest."""
from __future__ import annotations

from typing import Any

from celery.signals import celeryd_after_setup, worker_init, worker_process_init, worker_ready, worker_shutdown

from app.db import get_engine
from app.queue import AUTO_QUEUES, IMPORT_MODEL_TASK, PLAN_TRACE_TASK, RUN_JOB_TASK
from app.routing import queues_for_accelerator
from worker.accelerator import detect
from worker.celery_app import celery_app
from worker.heartbeat import Heartbeat
from worker.reconciler import Reconciler
from worker.runner import run_job as run_job_attempt


@celery_app.task(name=RUN_JOB_TASK, bind=True, acks_late=True, reject_on_worker_lost=True)
def run_job(self, job_id: str) -> str:  # type: ignore[no-untyped-def]
    return run_job_attempt(job_id, self.request.hostname or "worker")


@celery_app.task(name=PLAN_TRACE_TASK, acks_late=False, ignore_result=True)
def plan_trace(key: str, request: dict[str, Any]) -> None:
    """A traced plan (planning queue). Not acked late: a lost trace is asked again, never re-run blindly."""
    from worker.plan_task import run_plan_trace  # torch, transformers, peft: only when a plan is traced

    run_plan_trace(key, request)


@celery_app.task(name=IMPORT_MODEL_TASK, acks_late=False, ignore_result=True)
def import_model(import_id: str, path: str, name: str | None) -> None:
    """An admin's GGUF import (planning queue); progress and outcome go to its record in Redis.

    Not acked late: an import cut short by a lost worker left nothing (it is atomic), and is asked again."""
    from worker.model_import_task import run_model_import  # torch, transformers: only when a file is imported

    run_model_import(import_id, path, name)


@celeryd_after_setup.connect
def _serve_this_accelerators_memory_classes(sender: Any = None, instance: Any = None, **_: Any) -> None:
    """`-Q auto` stands for the queues this worker's accelerator can serve (app.routing), read at start."""
    queues = instance.app.amqp.queues
    if AUTO_QUEUES not in queues.consume_from:
        return
    queues.deselect([AUTO_QUEUES])
    accelerator = detect()
    for name in queues_for_accelerator(accelerator.kind, accelerator.memory_bytes):
        queues.select_add(name)


@worker_process_init.connect
def _own_database_pool(**_: Any) -> None:
    """Each pool child (one per job) gets a pool of its own.

    The child is forked from the worker's main process, whose reconciler and
    heartbeat threads use the same engine: a pool lock or SQLite connection
    held by one of them at the moment of the fork is copied into the child
    locked. A run_job child once hung that way in `claim()` for three minutes
    before its first query. `dispose(close=False)` drops the inherited pool
    without touching the parent's connections (SQLAlchemy's advice for forks).
    """
    get_engine().dispose(close=False)


@worker_init.connect
def _prepare_demo_model(**_: Any) -> None:
    from app.storage import models_dir
    from worker.demo_model import ensure_demo_model

    ensure_demo_model(models_dir())


@worker_ready.connect
def _start_heartbeat(sender: Any = None, **_: Any) -> None:
    queues = [q.name for q in sender.app.amqp.queues.consume_from.values()] if sender else []
    beat = Heartbeat(sender.hostname if sender else "worker", queues)
    beat.start()
    reconciler = Reconciler()
    reconciler.start()
    if sender is not None:
        sender.tunedeck_heartbeat = beat  # kept on the worker itself, not in a module global
        sender.tunedeck_reconciler = reconciler


@worker_shutdown.connect
def _stop_heartbeat(sender: Any = None, **_: Any) -> None:
    for name in ("tunedeck_heartbeat", "tunedeck_reconciler"):
        service = getattr(sender, name, None)
        if service is not None:
            service.stop()
