"""Pure pieces of checkpoints and evaluation: options, the held-out split, a full disk's error."""
from __future__ import annotations

import errno
from pathlib import Path

import pytest

from app.schemas.hyperparameters import Hyperparameters

pytestmark = pytest.mark.unit


def test_eval_options_are_validated() -> None:
    with pytest.raises(ValueError, match="either eval_fraction or eval_count"):
        Hyperparameters(eval_fraction=0.1, eval_count=10)
    from pydantic import TypeAdapter

    from app.schemas.jobs import JobCreate

    body = {"model": "demo", "dataset": "demo", "method": "lora"}
    with pytest.raises(ValueError, match="eval_every needs held-out rows"):
        TypeAdapter(JobCreate).validate_python({**body, "hyperparameters": {"eval_every": 10}})
    with_file = TypeAdapter(JobCreate).validate_python({**body, "validation_dataset": "other",
                                                        "hyperparameters": {"eval_every": 10}})
    assert with_file.validation_dataset == "other"
    with pytest.raises(ValueError, match="either validation_dataset or eval_fraction"):
        TypeAdapter(JobCreate).validate_python({**body, "validation_dataset": "other",
                                                "hyperparameters": {"eval_count": 5}})
    hp = Hyperparameters()
    assert (hp.checkpoint_every, hp.keep_checkpoints, hp.eval_every, hp.sample_every) == (50, 3, 0, 0)
    for name in ("checkpoint_every", "keep_checkpoints", "eval_fraction", "eval_count", "eval_every", "sample_every"):
        assert Hyperparameters.model_fields[name].description


def test_held_out_rows_are_fixed_by_the_seed_and_disjoint_from_training() -> None:
    from worker.train.data import Example, split_holdout

    rows = [Example([i, i], [i, i]) for i in range(100)]
    train, held = split_holdout(rows, 0.1, None, seed=3)
    again, held_again = split_holdout(rows, None, 10, seed=3)
    assert len(held) == 10 and len(train) == 90 and held == held_again and train == again
    assert {e.input_ids[0] for e in train}.isdisjoint({e.input_ids[0] for e in held})
    assert split_holdout(rows, None, None, seed=3) == (rows, [])
    with pytest.raises(ValueError, match="leaves none"):
        split_holdout(rows, None, 100, seed=3)


def test_a_full_disk_during_torch_save_is_reported_as_no_space_left(tmp_path: Path) -> None:
    """torch.save says "unexpected pos" when the disk fills; the job's error must say what happened."""
    from worker.train.checkpoint import CheckpointWriteError

    cause = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 1088 vs 1024")
    error = CheckpointWriteError(7, tmp_path, cause)
    assert error.errno == errno.ENOSPC
    assert "checkpoint of step 7" in str(error) and "No space left on device" in str(error)
    assert "previous checkpoint is intact" in str(error)
    other = CheckpointWriteError(7, tmp_path, PermissionError(errno.EACCES, "Permission denied"))
    assert other.errno == errno.EACCES and "Permission denied" in str(other)


def _complete(folder: Path, step: int) -> Path:
    path = folder / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "state.json").write_text("{}")
    return path


def test_a_resume_prefers_the_newest_checkpoint_the_history_records(tmp_path: Path) -> None:
    """A worker SIGKILLed between reading a step's metric and storing it leaves an orphaned trainer
    that can finish a newer checkpoint: resuming from it would leave that step out of the history."""
    from worker.train.checkpoint import latest

    for step in (4, 6, 8):
        _complete(tmp_path, step)
    assert latest(tmp_path).name == "checkpoint-8"
    assert latest(tmp_path, through=6).name == "checkpoint-6"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-4", "checkpoint-6"]  # 8 is gone


def test_a_resume_with_no_recorded_checkpoint_left_takes_the_newest(tmp_path: Path) -> None:
    from worker.train.checkpoint import latest

    _complete(tmp_path, 8)
    assert latest(tmp_path, through=6).name == "checkpoint-8"  # better than starting over
    assert latest(tmp_path, through=None).name == "checkpoint-8"
