"""The Celery application the worker runs: app.queue's, with the tasks it registers.

The configuration (RELIABILITY.md §2.4: late acks, one task at a time per
worker, JSON only), the task names and the queue names live in app.queue,
which the API sends through; this adds only the module that defines the
tasks, imported when the worker starts.
"""
from __future__ import annotations

from app.queue import celery_client

celery_app = celery_client()
celery_app.conf.update(include=["worker.tasks"])
