"""Alembic upgrades keep existing rows: a database made by an earlier release upgrades in place."""
from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit


ROOT = Path(__file__).resolve().parent.parent


def _alembic(data_dir: Path, *args: str) -> None:
    env = {**os.environ, "TUNEDECK_DATA_DIR": str(data_dir)}
    env.pop("TUNEDECK_DATABASE_URL", None)
    subprocess.run([sys.executable, "-m", "alembic", *args], cwd=ROOT, env=env, check=True, capture_output=True)


def test_upgrading_a_database_with_jobs_and_events_keeps_them(tmp_path: Path) -> None:
    _alembic(tmp_path, "upgrade", "0001")
    db = sqlite3.connect(tmp_path / "tunedeck.db")
    db.execute("INSERT INTO job (id, name, model, dataset_id, method, config, queue, status, step, total_steps, "
               "metrics, summary, attempt, cancel_requested, event_seq, created_at) VALUES "
               "('j1', 'n', 'demo', 'demo', 'lora', '{}', 'cpu', 'succeeded', 5, 5, '{}', '{}', 1, 0, 1, "
               "'2026-01-01 00:00:00')")
    db.execute("INSERT INTO job_event (job_id, seq, kind, data, created_at) VALUES "
               "('j1', 1, 'status', '{\"status\": \"queued\"}', '2026-01-01 00:00:00')")
    db.commit()
    db.close()
    _alembic(tmp_path, "upgrade", "head")
    db = sqlite3.connect(tmp_path / "tunedeck.db")
    assert db.execute("SELECT id, resume, plan FROM job").fetchall() == [("j1", 1, None)]
    assert db.execute("SELECT count(*) FROM job_event").fetchone() == (1,)


def test_every_migration_downgrades_cleanly(tmp_path: Path) -> None:
    _alembic(tmp_path, "upgrade", "head")
    _alembic(tmp_path, "downgrade", "base")
    db = sqlite3.connect(tmp_path / "tunedeck.db")
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert tables <= {"alembic_version"}


def test_the_migrations_describe_the_models_exactly(tmp_path: Path) -> None:
    """`alembic check` compares the upgraded database with the SQLModel tables: a model changed
    without its migration (or the other way round) fails here, not on a user's first start."""
    _alembic(tmp_path, "upgrade", "head")
    env = {**os.environ, "TUNEDECK_DATA_DIR": str(tmp_path)}
    env.pop("TUNEDECK_DATABASE_URL", None)
    result = subprocess.run([sys.executable, "-m", "alembic", "check"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
