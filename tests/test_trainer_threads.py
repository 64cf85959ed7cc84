"""The trainer's OpenMP wait policy (worker/train/threads.py): a brief spin alone, passive when sharing."""
from __future__ import annotations

from pathlib import Path

import pytest

from worker.train.threads import BRIEF_SPIN, choose_wait_policy, is_trainer, other_trainers

pytestmark = pytest.mark.unit


def _process(proc: Path, pid: int, *argv: str) -> None:
    (proc / str(pid)).mkdir()
    (proc / str(pid) / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")


def test_a_trainer_alone_spins_briefly_before_sleeping() -> None:
    env: dict[str, str] = {}
    assert "brief spin" in choose_wait_policy(env, others=0)
    assert env == {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": BRIEF_SPIN}


def test_a_trainer_sharing_the_machine_waits_passively() -> None:
    env: dict[str, str] = {}
    assert "1 other trainer" in choose_wait_policy(env, others=1)
    assert env == {"OMP_WAIT_POLICY": "PASSIVE"}


def test_the_parents_choice_wins() -> None:
    env = {"OMP_WAIT_POLICY": "ACTIVE"}
    assert "as set" in choose_wait_policy(env, others=0)
    assert env == {"OMP_WAIT_POLICY": "ACTIVE"}


def test_other_trainers_are_counted_from_the_process_table_without_this_one(tmp_path: Path) -> None:
    _process(tmp_path, 10, "/venv/bin/python", "-m", "worker.train", "/jobs/a/spec.json")
    _process(tmp_path, 11, "/venv/bin/python", "-m", "worker.train", "/jobs/b/spec.json")
    _process(tmp_path, 12, "/venv/bin/python", "-m", "celery", "worker")
    (tmp_path / "self").mkdir()  # not a process id
    assert other_trainers(tmp_path, me=11) == 1
    assert not is_trainer(["python", "-c", "import worker.train"])

