"""Every fine-tuning method the trainer has, run for real on the demo model and dataset.

Each method trains a few steps in the trainer subprocess; then its download
is loaded by the standard library (transformers for model folders, peft for
PEFT folders, our public loader `worker.bottleneck.from_pretrained` for
bottleneck adapters) in a fresh Python process, and must give the next-token
logits of the probe prompt that the training process reported at its end.

QLoRA's adapter is loaded the way it was trained: onto the base quantised to
4 bits with the job's `BitsAndBytesConfig` (then `PeftModel.from_pretrained`).
On the float32 base it gives other logits (the base's quantisation error,
about 0.6 on the demo); that path is the merged model's, see test_merge.py.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from tests.helpers.artifact_probe import probe_in_fresh_process
from tests.helpers.method_runs import (
    CASES,
    GALORE_RANK,
    PROBE_TOLERANCE,
    STEPS,
    MethodRun,
    assert_succeeded,
    trained,
    write_method_spec,
)
from tests.helpers.trainer import run_trainer
from worker.train.loop import PROBE_PROMPT

pytestmark = pytest.mark.integration


# One step's loss depends on its batch, so compare the mean of the first and last three steps.
LOSS_WINDOW = 3
MIN_LOSS_DROP = 0.3  # nats; every method drops by more than 0.8 on the demo in 12 steps
# Singular values of a GaLore update below this fraction of the largest are rounding (see below).
RANK_RTOL = 1e-4


@pytest.fixture(scope="module", params=list(CASES))
def method_run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> MethodRun:
    return trained(request.param, tmp_path_factory)


@pytest.mark.integration
def test_loss_goes_down(method_run: MethodRun) -> None:
    losses = [m["loss"] for m in method_run.run.of("metric")]
    assert len(losses) == STEPS
    first = sum(losses[:LOSS_WINDOW]) / LOSS_WINDOW
    last = sum(losses[-LOSS_WINDOW:]) / LOSS_WINDOW
    assert last < first - MIN_LOSS_DROP, losses
    assert method_run.summary()["final_loss"] == losses[-1]


def _safetensors_shapes(path: Path) -> dict[str, list[int]]:
    with safe_open(path, framework="pt") as weights:
        return {name: weights.get_slice(name).get_shape() for name in weights.keys()}


def _changed_tensors(base: Path, tuned: Path) -> dict[str, int]:
    """Name -> element count of every tensor that differs between two model.safetensors files."""
    changed: dict[str, int] = {}
    with safe_open(base, framework="pt") as before, safe_open(tuned, framework="pt") as after:
        assert set(before.keys()) == set(after.keys())
        for name in before.keys():
            if not torch.equal(before.get_tensor(name), after.get_tensor(name)):
                changed[name] = after.get_tensor(name).numel()
    return changed


@pytest.mark.integration
def test_trainable_params_are_what_the_artifact_holds(method_run: MethodRun, assets: tuple[Path, Path]) -> None:
    """The reported count is a requires_grad count; recount it from the download."""
    summary = method_run.summary()
    trainable = summary["trainable_params"]
    assert summary["trainable_percent"] == pytest.approx(100 * trainable / summary["total_params"])
    if method_run.case.artifact in ("peft", "qlora", "bottleneck"):
        # An adapter folder holds exactly the trained tensors (LoRA A/B, DoRA magnitudes, prefixes,
        # prompts, bottleneck down/up projections).
        shapes = _safetensors_shapes(method_run.artifact / "adapter_model.safetensors")
        assert trainable == sum(math.prod(shape) for shape in shapes.values())
        assert trainable < summary["total_params"] / 10
        if method_run.case.artifact == "qlora":
            # r=8 on q,k,v,o of 4 layers: r·(d_in + d_out) per target; k/v project 256 -> 128 (GQA).
            assert trainable == 4 * 8 * ((256 + 256) + (256 + 128) + (256 + 128) + (256 + 256))
            # The total counts the 4-bit weights as the weights they stand for, not as packed bytes.
            assert summary["total_params"] == _demo_parameter_count(assets[0]) + trainable
        if method_run.case.artifact == "bottleneck":
            h, m = 256, 256 // 16
            per_layer = 2 if method_run.case.method_config["config"] == "houlsby" else 1
            assert trainable == 4 * per_layer * (2 * h * m + h + m)
        return
    # A model folder: exactly the trainable tensors moved, every other one is bit-identical to the base.
    changed = _changed_tensors(assets[0] / "model.safetensors", method_run.artifact / "model.safetensors")
    assert trainable == sum(changed.values())
    if method_run.method in ("full", "galore"):
        assert trainable == summary["total_params"]
        if method_run.method == "galore":
            _assert_galore_updates_are_low_rank(method_run, assets[0])
    else:  # freeze: the last 2 of 4 decoder layers, the final norm and the head
        assert {name.split(".")[2] for name in changed if name.startswith("model.layers.")} == {"2", "3"}
        assert {name for name in changed if not name.startswith("model.layers.")} == {
            "model.norm.weight", "lm_head.weight"
        }


def _demo_parameter_count(model_dir: Path) -> int:
    shapes = _safetensors_shapes(model_dir / "model.safetensors")
    return sum(math.prod(shape) for shape in shapes.values())


def _assert_galore_updates_are_low_rank(method_run: MethodRun, base: Path) -> None:
    """GaLore really projected: a targeted weight moved by a rank-`rank` matrix, the head by a full-rank one."""
    assert any(log["message"] == "Optimizer: galore_adamw" for log in method_run.run.of("log"))
    with safe_open(base / "model.safetensors", framework="pt") as before, safe_open(
        method_run.artifact / "model.safetensors", framework="pt"
    ) as after:
        def delta(name: str) -> torch.Tensor:
            return after.get_tensor(name).double() - before.get_tensor(name).double()

        # Singular values below RANK_RTOL·σ_max are float32 rounding of the saved weights (~4e-6·σ_max
        # here), not update directions; the smallest kept direction is ~0.2·σ_max.
        def rank(update: torch.Tensor) -> int:
            return int(torch.linalg.matrix_rank(update, rtol=RANK_RTOL).item())

        for name in ("model.layers.0.self_attn.q_proj.weight", "model.layers.3.mlp.down_proj.weight"):
            update = delta(name)
            assert update.abs().max() > 0
            assert rank(update) == GALORE_RANK, name
        assert rank(delta("lm_head.weight")) > GALORE_RANK  # not targeted: plain AdamW


@pytest.mark.integration
def test_download_loads_in_a_fresh_process_with_the_trained_logits(
    method_run: MethodRun, assets: tuple[Path, Path]
) -> None:
    probe = method_run.summary()["probe"]
    assert probe["prompt"] == PROBE_PROMPT
    reported = probe["next_token_logits"]
    assert len(reported) == 259  # the demo tokenizer's vocabulary: 256 bytes + 3 specials
    if method_run.case.artifact != "model":
        config = json.loads((method_run.artifact / "adapter_config.json").read_text())
        assert config["base_model_name_or_path"] == str(assets[0])
        # generate tells the two adapter kinds apart by these keys.
        assert ("peft_type" in config) is (method_run.case.artifact != "bottleneck")
    loaded = probe_in_fresh_process(
        method_run.case.artifact, method_run.artifact, PROBE_PROMPT, method_run.case.method_config
    )
    assert len(loaded) == len(reported)
    assert max(abs(a - b) for a, b in zip(loaded, reported)) < PROBE_TOLERANCE


@pytest.mark.integration
@pytest.mark.parametrize("optimizer", ["adamw_8bit", "adafactor", "sgd"])
def test_full_trains_with_each_optimizer(optimizer: str, assets: tuple[Path, Path], tmp_path: Path) -> None:
    spec = write_method_spec(tmp_path / "job", *assets, "full", {"optimizer": optimizer}, max_steps=4)
    run = run_trainer(spec)
    assert_succeeded(run)
    assert any(log["message"] == f"Optimizer: {optimizer}" for log in run.of("log"))
    losses = [m["loss"] for m in run.of("metric")]
    assert len(losses) == 4 and all(math.isfinite(loss) for loss in losses)
    # Every optimiser moved the weights: the loss after the first updates is not the starting one.
    assert losses[-1] != losses[0]
    assert (spec.parent / "artifact" / "model.safetensors").is_file()
