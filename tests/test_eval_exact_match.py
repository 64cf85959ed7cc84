"""Held-out exact match in the real training subprocess, on the demo model and a task it learns in 20 steps.

Every held-out row of the task has the same answer ("yes"), which LoRA on the
random-weight demo model learns within a few steps, so its exact match goes
from none of the rows to all of them. The trainer is run as the worker runs
it; the kill in the resume test is a real SIGKILL from the fault hook.
"""
from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.trainer import Run, run_trainer, write_spec

pytestmark = pytest.mark.integration

STEPS = 20
EVAL_EVERY = 5
WORDS = ("apple", "river", "stone", "cloud", "tiger", "green", "light", "house",
         "bread", "chair", "dance", "eagle", "flame", "grape", "heart", "lemon")
SETTINGS: dict[str, Any] = {"max_steps": STEPS, "learning_rate": 3e-3, "eval_count": 16, "checkpoint_every": 5}


@pytest.fixture(scope="module")
def task(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """96 prompt/completion rows, all answered "yes"."""
    path = tmp_path_factory.mktemp("yes-task") / "yes.jsonl"
    rows = [{"prompt": f"{a} {b}?", "completion": "yes"} for a in WORDS for b in WORDS[:6]]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def _train(job: Path, model: Path, task: Path, *, fault: str | None = None, resume: bool = False,
           **hyperparameters: Any) -> Run:
    """One trainer run in `job` (checkpoints in job/checkpoints); `resume` continues from the newest."""
    spec = write_spec(job, model, task, **{**SETTINGS, **hyperparameters})
    spec.write_text(json.dumps({**json.loads(spec.read_text()), "resume": resume}))
    return run_trainer(spec, fault=fault)


def _evaluations(run: Run) -> dict[int, tuple[float, float]]:
    return {m["step"]: (m["eval_loss"], m["eval_exact_match"]) for m in run.of("metric") if "eval_loss" in m}


@pytest.fixture(scope="module")
def evaluated(assets: tuple[Path, Path], task: Path, tmp_path_factory: pytest.TempPathFactory) -> Run:
    """Evaluated every 5 steps of 20."""
    run = _train(tmp_path_factory.mktemp("evaluated"), assets[0], task, eval_every=EVAL_EVERY)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return run


def test_exact_match_is_reported_exactly_where_eval_loss_is(evaluated: Run) -> None:
    metrics = evaluated.of("metric")
    assert [m["step"] for m in metrics if "eval_exact_match" in m] == [5, 10, 15, 20]
    assert [m["step"] for m in metrics if "eval_loss" in m] == [5, 10, 15, 20]
    assert all(0.0 <= m["eval_exact_match"] <= 1.0 for m in metrics if "eval_exact_match" in m)


def test_exact_match_rises_from_no_row_to_every_row_as_the_model_learns(evaluated: Run) -> None:
    scores = [match for _, match in _evaluations(evaluated).values()]
    assert scores[0] == 0.0 and scores[-1] == 1.0, scores
    assert "exact match 100.0%" in " ".join(log["message"] for log in evaluated.of("log"))


def test_the_summary_carries_the_final_eval_loss_and_exact_match(evaluated: Run) -> None:
    (summary,) = evaluated.of("summary")
    assert (summary["eval_loss"], summary["eval_exact_match"]) == _evaluations(evaluated)[STEPS]


def test_evaluating_every_5_steps_trains_what_evaluating_only_at_the_end_trains(
    evaluated: Run, assets: tuple[Path, Path], task: Path, tmp_path: Path
) -> None:
    """Greedy decoding runs in eval mode, without gradients, in a forked RNG: LoRA's dropout draws the same."""
    at_end = _train(tmp_path / "at-end", assets[0], task, eval_every=0)
    assert at_end.returncode == 0, at_end.stdout[-3000:]
    assert [m["loss"] for m in at_end.of("metric")] == [m["loss"] for m in evaluated.of("metric")]
    assert _evaluations(at_end) == {STEPS: _evaluations(evaluated)[STEPS]}


def test_a_resumed_run_scores_the_held_out_rows_as_the_uninterrupted_run(
    evaluated: Run, assets: tuple[Path, Path], task: Path, tmp_path: Path
) -> None:
    killed = _train(tmp_path, assets[0], task, fault="sigkill@step12", eval_every=EVAL_EVERY)
    assert killed.returncode == -signal.SIGKILL
    resumed = _train(tmp_path, assets[0], task, eval_every=EVAL_EVERY, resume=True)
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    assert [m["step"] for m in resumed.of("metric")][0] == 11  # after checkpoint-10
    uninterrupted = _evaluations(evaluated)
    assert _evaluations(resumed) == {step: uninterrupted[step] for step in (15, 20)}
