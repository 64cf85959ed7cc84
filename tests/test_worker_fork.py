"""A Celery pool child must not reuse the database pool it inherits from the worker's main process."""
from __future__ import annotations

import pytest
from celery.signals import worker_process_init

import worker.tasks  # noqa: F401 - connects the worker's signal handlers
from app.db import get_engine

pytestmark = pytest.mark.unit


def test_a_pool_child_starts_with_a_database_pool_of_its_own() -> None:
    inherited = get_engine().pool
    worker_process_init.send(sender=None)
    assert get_engine().pool is not inherited
