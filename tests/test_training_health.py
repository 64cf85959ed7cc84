"""Training health (issue 17): a diverging run ends `failed` saying what to change, before its last step;
warm-up longer than the run is refused at submission."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
from pydantic import TypeAdapter, ValidationError

from app.schemas.hyperparameters import Hyperparameters
from app.schemas.jobs import JobCreate

pytestmark = pytest.mark.unit


def test_a_nan_loss_or_exploding_gradients_end_the_run_unless_asked_to_go_on() -> None:
    from worker.train.health import Diverged, Health

    with pytest.raises(Diverged, match="training loss is nan at step 3.*Lower the learning rate"):
        Health(Hyperparameters()).check(3, math.nan, 1.0, 2e-4)
    watch = Health(Hyperparameters(warmup_steps=2))
    for step in range(1, 8):
        watch.check(step, 2.0, 0.5 + 0.01 * step, 1e-3)
    with pytest.raises(Diverged, match=r"gradient norm 900 at step 8 is over 1000× its running median"):
        watch.check(8, 2.0, 900.0, 1e-3)
    Health(Hyperparameters(continue_on_divergence=True)).check(3, math.inf, 1.0, 2e-4)  # logged, not raised
    with pytest.raises(Diverged, match=r"loss 4141 at step 2 is over 10× that of a uniform guess .*\(5\.56\)"):
        Health(Hyperparameters(), vocab_size=259).check(2, 4140.84, 3.0, 5.0)
    Health(Hyperparameters(), vocab_size=259).check(2, 6.2, 3.0, 5.0)  # a random model's first loss: fine


def test_warmup_longer_than_the_run_is_refused_at_the_field() -> None:
    with pytest.raises(ValidationError, match="warmup_steps 50 is longer than the run's 20 steps"):
        TypeAdapter(JobCreate).validate_python({"model": "demo", "dataset": "demo", "method": "lora",
                                                "hyperparameters": {"max_steps": 20, "warmup_steps": 50}})


@pytest.mark.integration
def test_a_job_at_learning_rate_5_fails_with_the_divergence_message_before_its_last_step(
        assets: tuple[Path, Path], tmp_path: Path) -> None:
    """Acceptance 5: the real trainer on the demo model."""
    from tests.helpers.trainer import run_trainer, write_spec

    spec = write_spec(tmp_path / "job", assets[0], assets[1], method="full", method_config={}, max_steps=200,
                      learning_rate=5.0, batch_size=8)
    run = run_trainer(spec)
    assert run.returncode == 1
    error = run.of("error")[0]["message"]
    assert error.startswith("training diverged:") and "Lower the learning rate (it was 5" in error, error
    assert max(m["step"] for m in run.of("metric")) < 200
    assert not (tmp_path / "job" / "artifact").exists()
