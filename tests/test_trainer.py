"""The training subprocess, run for real on the demo model and the demo dataset."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from safetensors import safe_open

from tests.helpers.trainer import LEARNING_RATE, REPO_ROOT, STEPS, Run, run_trainer, write_spec
from worker.train.events import parse_line

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def lora_run(assets: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Run, Path]:
    model, dataset = assets
    spec = write_spec(tmp_path_factory.mktemp("jobs") / "job1", model, dataset)
    run = run_trainer(spec)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return run, spec.parent / "artifact"


def test_stdout_carries_only_protocol_lines(lora_run: tuple[Run, Path]) -> None:
    run, _ = lora_run
    assert [line for line in run.stdout.splitlines() if line and parse_line(line) is None] == []


def test_one_metric_per_step(lora_run: tuple[Run, Path]) -> None:
    metrics = lora_run[0].of("metric")
    assert [m["step"] for m in metrics] == list(range(1, STEPS + 1))
    assert all(m["total"] == STEPS and m["tokens_per_second"] > 0 and m["grad_norm"] > 0 for m in metrics)
    assert metrics[0]["learning_rate"] == pytest.approx(LEARNING_RATE)
    assert metrics[-1]["learning_rate"] == pytest.approx(LEARNING_RATE * 0.1)
    assert metrics[-1]["epoch"] == pytest.approx(STEPS * 8 / 400)


def test_loss_goes_down(lora_run: tuple[Run, Path]) -> None:
    losses = [m["loss"] for m in lora_run[0].of("metric")]
    assert losses[-1] < losses[0] - 1.0, losses


def test_summary_counts_the_saved_adapter_weights(lora_run: tuple[Run, Path]) -> None:
    run, artifact = lora_run
    (summary,) = run.of("summary")
    with safe_open(artifact / "adapter_model.safetensors", framework="pt") as weights:
        saved = sum(weights.get_slice(name).get_shape()[0] * weights.get_slice(name).get_shape()[1]
                    for name in weights.keys())
    assert summary["trainable_params"] == saved
    assert 1_000_000 < summary["total_params"] < 10_000_000
    assert summary["trainable_percent"] == pytest.approx(100 * saved / summary["total_params"])
    assert summary["steps"] == STEPS
    assert summary["final_loss"] == run.of("metric")[-1]["loss"]
    assert summary["peak_memory_bytes"] > 0 and summary["tokens_per_second"] > 0
    assert summary["artifact_dir"] == str(artifact)


def test_artifact_is_a_complete_peft_folder(lora_run: tuple[Run, Path], assets: tuple[Path, Path]) -> None:
    _, artifact = lora_run
    names = {p.name for p in artifact.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= names
    config = json.loads((artifact / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(assets[0])
    assert sorted(config["target_modules"]) == ["k_proj", "o_proj", "q_proj", "v_proj"]
    assert not [p for p in artifact.parent.iterdir() if ".tmp-" in p.name]


def test_adapter_loads_in_a_fresh_process_and_changes_logits(
    lora_run: tuple[Run, Path], assets: tuple[Path, Path]
) -> None:
    script = textwrap.dedent(
        """
        import sys, torch
        from peft import PeftModel
        from transformers import AutoModelForCausalLM, AutoTokenizer
        base_path, adapter_path = sys.argv[1:]
        tokenizer = AutoTokenizer.from_pretrained(adapter_path)
        batch = tokenizer("### Instruction:\\nConvert to uppercase.", return_tensors="pt")
        model = AutoModelForCausalLM.from_pretrained(base_path).eval()
        with torch.no_grad():
            base = model(**batch).logits.clone()
            tuned = PeftModel.from_pretrained(model, adapter_path).eval()(**batch).logits
        print((tuned - base).abs().max().item())
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, str(assets[0]), str(lora_run[1])],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert float(proc.stdout.strip().splitlines()[-1]) > 1e-3


def test_injected_fault_exits_1_with_an_error_event(assets: tuple[Path, Path], tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "job", *assets, max_steps=4)
    run = run_trainer(spec, fault="raise@step2")
    assert run.returncode == 1
    assert [m["step"] for m in run.of("metric")] == [1, 2]
    assert run.of("error") == [{"message": "injected fault at step 2", "type": "RuntimeError"}]
    assert any("Traceback" in log["message"] for log in run.of("log"))
    assert not run.of("summary")
    assert not (tmp_path / "job" / "artifact").exists()


def test_invalid_spec_is_reported_as_an_error_event(assets: tuple[Path, Path], tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "job", *assets, max_steps=None, epochs=None)
    run = run_trainer(spec)
    assert run.returncode == 1
    (error,) = run.of("error")
    assert error["type"] == "ValidationError"
