"""The training subprocess, run for real on the demo model and the demo dataset."""
from __future__ import annotations

import atexit
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from safetensors import safe_open

from worker.train.events import parse_line

REPO_ROOT = Path(__file__).resolve().parents[1]
STEPS = 40
# 2e-4 also lowers the loss in 40 steps on the demo; 1e-3 makes the drop unmistakable.
LEARNING_RATE = 1e-3


@dataclass
class Run:
    returncode: int
    events: list[tuple[str, dict[str, Any]]]
    stdout: str
    stderr: str

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [data for k, data in self.events if k == kind]


def write_spec(job_dir: Path, model: Path, dataset: Path, **hyperparameters: Any) -> Path:
    job_dir.mkdir(parents=True, exist_ok=True)
    hp: dict[str, Any] = {
        "max_steps": STEPS, "epochs": None, "learning_rate": LEARNING_RATE, "batch_size": 8, "seq_len": 128,
        "gradient_accumulation": 1, "warmup_steps": 0, "weight_decay": 0.0, "seed": 42, "log_every": 1,
        "gradient_checkpointing": False,
    }
    hp.update(hyperparameters)
    spec = {
        "job_id": job_dir.name,
        "model_path": str(model),
        "dataset_path": str(dataset),
        "output_dir": str(job_dir / "artifact"),
        "config": {
            "model": "demo", "dataset": "demo", "method": "lora", "hyperparameters": hp,
            "method_config": {"r": 8, "alpha": 16, "dropout": 0.05, "target_modules": "attention"},
        },
    }
    path = job_dir / "spec.json"
    path.write_text(json.dumps(spec), encoding="utf-8")
    return path


@functools.cache
def trainer_data_dir() -> str:
    """A migrated data dir of the trainer's own, once per test process.

    The trainer may ask the database whether a model may run its own code
    (app.catalog.trust), as it does on a worker; without this it would use
    whatever ./var holds, migrated or not.
    """
    folder = tempfile.mkdtemp(prefix="tunedeck-trainer-data-")
    atexit.register(shutil.rmtree, folder, True)
    env = {k: v for k, v in os.environ.items() if k != "TUNEDECK_DATABASE_URL"}
    subprocess.run([sys.executable, "-m", "app.cli", "migrate"], cwd=REPO_ROOT, check=True,
                   env={**env, "TUNEDECK_DATA_DIR": folder}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return folder


def trainer_env(fault: str | None = None) -> dict[str, str]:
    """The environment a worker gives the trainer: the data dir, offline hub, a fault only if asked."""
    env = {k: v for k, v in os.environ.items() if k not in {"TUNEDECK_FAULT", "TUNEDECK_DATABASE_URL"}}
    env.update({"TUNEDECK_DATA_DIR": trainer_data_dir(), "HF_HUB_OFFLINE": "1"})
    if fault:
        env["TUNEDECK_FAULT"] = fault
    return env


def run_trainer(spec: Path, fault: str | None = None) -> Run:
    env = trainer_env()
    if fault:
        env["TUNEDECK_FAULT"] = fault
    proc = subprocess.run(
        [sys.executable, "-m", "worker.train", str(spec)],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    events = [event for line in proc.stdout.splitlines() if (event := parse_line(line))]
    return Run(proc.returncode, events, proc.stdout, proc.stderr)


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


# Pure pieces of the trainer, in-process and fast.

@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ({"instruction": "Shout.", "input": "hi", "output": "HI"},
         ("### Instruction:\nShout.\n\n### Input:\nhi\n\n### Response:\n", "HI")),
        ({"instruction": "Shout.", "input": "", "output": "HI"}, ("### Instruction:\nShout.\n\n### Response:\n", "HI")),
        ({"prompt": "2+2=", "completion": "4"}, ("2+2=", "4")),
        ({"text": "plain"}, ("", "plain")),
        ({"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                       {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Bye"},
                       {"role": "assistant", "content": "Ciao"}]},
         ("<|system|>\nBe brief.\n<|user|>\nHi\n<|assistant|>\nHello\n<|user|>\nBye\n<|assistant|>\n", "Ciao")),
    ],
)
def test_row_to_pair_renders_every_format(row: dict[str, Any], expected: tuple[str, str]) -> None:
    from worker.train.data import row_to_pair

    assert row_to_pair(row) == expected


def test_encode_pair_masks_prompt_and_truncates() -> None:
    from worker.demo_model import build_tokenizer
    from worker.train.data import IGNORE_INDEX, encode_pair

    tokenizer = build_tokenizer()
    example = encode_pair(tokenizer, "ab", "CD", seq_len=128)
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    assert example.input_ids == [bos, ord("a"), ord("b"), ord("C"), ord("D"), eos]
    assert example.labels == [IGNORE_INDEX] * 3 + [ord("C"), ord("D"), eos]
    assert encode_pair(tokenizer, "ab", "CD", seq_len=4).labels == [IGNORE_INDEX] * 3 + [ord("C")]


def test_collate_pads_right_and_counts_tokens() -> None:
    from worker.train.data import IGNORE_INDEX, Example, collate

    batch = collate([Example([1, 2, 3], [IGNORE_INDEX, 2, 3]), Example([4], [4])], pad_id=0)
    assert batch.input_ids.tolist() == [[1, 2, 3], [4, 0, 0]]
    assert batch.attention_mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch.labels.tolist() == [[IGNORE_INDEX, 2, 3], [4, IGNORE_INDEX, IGNORE_INDEX]]
    assert (batch.n_tokens, batch.n_targets) == (4, 2)


def test_lr_warms_up_then_decays_to_a_tenth() -> None:
    from worker.train.loop import lr_at

    lrs = [lr_at(step, total=10, warmup=2, peak=1.0) for step in range(1, 11)]
    assert lrs[:3] == [0.5, 1.0, 1.0]
    assert lrs[-1] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(lrs[1:], lrs[2:]))


@pytest.mark.parametrize("text", ["explode@step3", "raise@stepx", "raise"])
def test_a_malformed_fault_spec_is_refused(text: str) -> None:
    from worker.train.loop import parse_fault

    with pytest.raises(ValueError, match="TUNEDECK_FAULT"):
        parse_fault(text)


def test_fault_specs_parse() -> None:
    from worker.train.loop import Fault, parse_fault

    assert parse_fault("") is None
    assert parse_fault("sigkill@step5") == Fault("sigkill", 5)
    assert parse_fault("sleep@step4:2.5") == Fault("sleep", 4, 2.5)
