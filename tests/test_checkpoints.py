"""Checkpoints, resume, evaluation and samples in the real training subprocess on the demo model.

The trainer is run as the worker runs it (`python -m worker.train SPEC`), with
a migrated data directory of its own (the trainer may ask the database
whether a model may run its own code). Kills are real SIGKILLs from the fault hook;
stops are real SIGTERMs.
"""
from __future__ import annotations

import itertools
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from safetensors.torch import load_file

from app.jobs.checkpoints import complete_checkpoints
from tests.helpers.trainer import Run, trainer_env
from worker.train.events import parse_line
from worker.train.samples import MAX_NEW_TOKENS

pytestmark = pytest.mark.integration


REPO_ROOT = Path(__file__).resolve().parents[1]
LORA = {"r": 8, "alpha": 16, "dropout": 0.05, "target_modules": "attention"}
METHOD_CONFIGS: dict[str, dict[str, Any]] = {
    "lora": LORA,
    "full": {"optimizer": "adamw"},
    # A projection refreshed every 3 steps: the resumed run must carry the projector over.
    "galore": {"rank": 16, "update_proj_gap": 3, "scale": 0.25, "target_modules": "all-linear"},
}


@pytest.fixture(scope="module")
def env() -> dict[str, str]:
    """The trainer's environment: its own migrated data dir, and no fault unless a test sets one."""
    return trainer_env()


def write_spec(job_dir: Path, assets: tuple[Path, Path], *, method: str = "lora", resume: bool = False,
               **hyperparameters: Any) -> Path:
    job_dir.mkdir(parents=True, exist_ok=True)
    hp: dict[str, Any] = {"max_steps": 12, "learning_rate": 1e-3, "batch_size": 8, "seq_len": 128, "seed": 7}
    hp.update(hyperparameters)
    spec = {
        "job_id": job_dir.name,
        "model_path": str(assets[0]),
        "dataset_path": str(assets[1]),
        "output_dir": str(job_dir / "artifact"),
        "checkpoint_dir": str(job_dir / "checkpoints"),
        "resume": resume,
        "config": {"model": "demo", "dataset": "demo", "method": method, "hyperparameters": hp,
                   "method_config": METHOD_CONFIGS[method]},
    }
    path = job_dir / "spec.json"
    path.write_text(json.dumps(spec), encoding="utf-8")
    return path


def run(spec: Path, env: dict[str, str], fault: str | None = None) -> Run:
    environment = {**env, **({"TUNEDECK_FAULT": fault} if fault else {})}
    proc = subprocess.run([sys.executable, "-m", "worker.train", str(spec)], cwd=REPO_ROOT, env=environment,
                          capture_output=True, text=True, timeout=600, check=False)
    events = [event for line in proc.stdout.splitlines() if (event := parse_line(line))]
    return Run(proc.returncode, events, proc.stdout, proc.stderr)


def steps(run_: Run) -> list[int]:
    return [m["step"] for m in run_.of("metric")]


def logs_with(run_: Run, key: str) -> list[Any]:
    return [log[key] for log in run_.of("log") if key in log]


# One run with everything on: 15 steps, a checkpoint every 5 (keep 2), 16 rows held out,
# evaluation every 6 steps, samples every 10.

@pytest.fixture(scope="module")
def observed(assets: tuple[Path, Path], env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> tuple[Run, Path]:
    job = tmp_path_factory.mktemp("observed")
    spec = write_spec(job, assets, max_steps=15, checkpoint_every=5, keep_checkpoints=2, eval_count=16,
                      eval_every=6, sample_every=10)
    result = run(spec, env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result, job


def test_checkpoints_are_complete_and_only_the_last_k_stay(observed: tuple[Run, Path]) -> None:
    result, job = observed
    assert [c["step"] for c in logs_with(result, "checkpoint")] == [5, 10, 15]
    folder = job / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["checkpoint-10", "checkpoint-15"]  # no tmp-*, no 5
    for path in complete_checkpoints(folder):
        step = int(path.name.split("-")[1])
        state = json.loads((path / "state.json").read_text())
        assert state["step"] == step and state["consumed_rows"] == step * 8 and state["total_steps"] == 15
        assert state["method"] == "lora" and state["elapsed_seconds"] > 0 and state["saved_at"]
        assert {p.name for p in path.iterdir()} == {"state.json", "trainable.safetensors", "optimizer.pt", "rng.pt",
                                                    "adapter_config.json", "adapter_model.safetensors", "README.md"}
        # The adapter in a checkpoint is the trainable weights themselves, as PEFT names them.
        trainable = load_file(str(path / "trainable.safetensors"))
        adapter = load_file(str(path / "adapter_model.safetensors"))
        assert len(trainable) == len(adapter) > 0
        assert all(name.endswith(".default.weight") and "lora_" in name for name in trainable)
    last = load_file(str(folder / "checkpoint-15" / "trainable.safetensors"))
    final = load_file(str(job / "artifact" / "adapter_model.safetensors"))
    assert sorted(t.sum().item() for t in last.values()) == pytest.approx(sorted(t.sum().item() for t in final.values()))


def test_metrics_carry_memory_elapsed_and_eval_loss(observed: tuple[Run, Path]) -> None:
    result, _ = observed
    metrics = result.of("metric")
    assert steps(result) == list(range(1, 16))
    assert all(m["memory_mb"] > 10 for m in metrics)
    elapsed = [m["elapsed_seconds"] for m in metrics]
    assert all(0 < a < b for a, b in itertools.pairwise(elapsed))
    evaluated = {m["step"]: m["eval_loss"] for m in metrics if "eval_loss" in m}
    assert sorted(evaluated) == [6, 12, 15]  # every 6 steps and at the end
    assert evaluated[15] < evaluated[6] < 6.0  # the held-out loss falls as the model learns
    assert not any("resumed" in m for m in metrics)
    assert "16 held out for evaluation" in " ".join(log["message"] for log in result.of("log"))


def test_samples_complete_held_out_prompts(observed: tuple[Run, Path], assets: tuple[Path, Path]) -> None:
    result, _ = observed
    samples = logs_with(result, "sample")
    assert [s["step"] for s in samples] == [10] * 3 + [15] * 3
    from transformers import AutoTokenizer

    from worker.train.data import load_examples, prompt_ids, split_holdout

    tokenizer = AutoTokenizer.from_pretrained(str(assets[0]))
    _, held_out = split_holdout(load_examples(assets[1], tokenizer, 128)[0], None, 16, seed=7)
    held_prompts = [tokenizer.decode(prompt_ids(e), skip_special_tokens=True) for e in held_out]
    assert [s["prompt"] for s in samples[:3]] == held_prompts[:3]
    for sample in samples:
        assert sample["prompt"].startswith("### Instruction:") and sample["prompt"].endswith("### Response:\n")
        # The demo's byte tokenizer: one character per token, so at most MAX_NEW_TOKENS characters.
        assert isinstance(sample["completion"], str) and len(sample["completion"]) <= MAX_NEW_TOKENS
    # The same three prompts each time: the model's progress on fixed questions.
    assert [s["prompt"] for s in samples[:3]] == [s["prompt"] for s in samples[3:]]


# Resume: killed with SIGKILL after a checkpoint, then resumed; compared with an uninterrupted run.

ARTIFACT_FILES = {
    "lora": {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "tunedeck_training.json"},
    "full": {"config.json", "model.safetensors", "tokenizer.json", "tunedeck_training.json"},
    "galore": {"config.json", "model.safetensors", "tokenizer.json", "tunedeck_training.json"},
}


@pytest.mark.integration
@pytest.mark.parametrize("method", ["lora", "full", "galore"])
def test_a_killed_run_resumes_where_its_checkpoint_left_off(
    method: str, assets: tuple[Path, Path], env: dict[str, str], tmp_path: Path
) -> None:
    """Killed after step 8 with checkpoint-6 on disk: the resumed run re-runs 7-8 with exactly
    the losses the killed run had (same weights, optimiser state, RNG and data position) and ends at 10."""
    settings = {"method": method, "max_steps": 10, "checkpoint_every": 3, "learning_rate": 1e-3 if method == "lora" else 1e-4}
    job = tmp_path / "job"
    killed = run(write_spec(job, assets, **settings), env, fault="sigkill@step8")
    assert killed.returncode == -signal.SIGKILL
    assert steps(killed) == list(range(1, 9))
    assert [p.name for p in complete_checkpoints(job / "checkpoints")] == ["checkpoint-3", "checkpoint-6"]
    # Debris a crash could leave, and a planted folder without state.json: neither is resumed from.
    (job / "checkpoints" / "tmp-checkpoint-9-123").mkdir()
    (job / "checkpoints" / "checkpoint-99").mkdir()

    resumed = run(write_spec(job, assets, resume=True, **settings), env)
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    assert logs_with(resumed, "resumed_from") == [6]
    assert steps(resumed) == list(range(7, 11))  # continues after the checkpoint: no gap, no repeat
    assert [m.get("resumed") for m in resumed.of("metric")] == [True, None, None, None]
    assert sorted(p.name for p in (job / "checkpoints").iterdir()) == ["checkpoint-3", "checkpoint-6", "checkpoint-9"]

    # Steps 7 and 8 ran in both: the same numbers, so the resumed run is the run that was killed.
    before = {m["step"]: (m["loss"], m["grad_norm"]) for m in killed.of("metric") if m["step"] > 6}
    after = {m["step"]: (m["loss"], m["grad_norm"]) for m in resumed.of("metric") if m["step"] in before}
    assert _close(after, before), (after, before)
    assert ARTIFACT_FILES[method] <= {p.name for p in (job / "artifact").iterdir()}
    (summary,) = resumed.of("summary")
    assert summary["steps"] == 10


def _close(a: dict[int, tuple[float, float]], b: dict[int, tuple[float, float]]) -> bool:
    return a.keys() == b.keys() and all(abs(x - y) <= 1e-6 for k in a for x, y in zip(a[k], b[k]))


def test_a_fresh_start_drops_an_earlier_runs_checkpoints(
    assets: tuple[Path, Path], env: dict[str, str], tmp_path: Path
) -> None:
    old = tmp_path / "checkpoints" / "checkpoint-40"
    old.mkdir(parents=True)
    (old / "state.json").write_text(json.dumps({"step": 40, "consumed_rows": 320}))
    result = run(write_spec(tmp_path, assets, max_steps=4, checkpoint_every=2), env)
    assert result.returncode == 0, result.stdout[-3000:]
    assert steps(result) == [1, 2, 3, 4]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["checkpoint-2", "checkpoint-4"]


@pytest.mark.integration
def test_sigterm_stops_at_a_step_boundary_with_a_checkpoint_and_resumes(
    assets: tuple[Path, Path], env: dict[str, str], tmp_path: Path
) -> None:
    spec = write_spec(tmp_path, assets, max_steps=200, checkpoint_every=0)  # no periodic checkpoints
    proc = subprocess.Popen([sys.executable, "-m", "worker.train", str(spec)], cwd=REPO_ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    events: list[tuple[str, dict[str, Any]]] = []
    for line in proc.stdout:
        if (event := parse_line(line)) is not None:
            events.append(event)
            if event[0] == "metric" and event[1]["step"] == 3:
                break
    signalled = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    events += [e for line in proc.stdout if (e := parse_line(line)) is not None]
    assert proc.wait(timeout=30) == 3  # STOPPED_EXIT: stopped on request, not a crash
    latency = time.monotonic() - signalled
    stopped = Run(3, events, "", "")
    last = steps(stopped)[-1]
    assert last >= 3 and steps(stopped) == list(range(1, last + 1))
    assert logs_with(stopped, "stopped") == [{"step": last}]
    assert logs_with(stopped, "checkpoint") == [{"step": last, "name": f"checkpoint-{last}"}]
    assert not stopped.of("error") and not stopped.of("summary")
    assert not (tmp_path / "artifact").exists()
    assert latency < 10, latency

    resumed = run(write_spec(tmp_path, assets, max_steps=last + 2, checkpoint_every=0, resume=True), env)
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    assert steps(resumed) == [last + 1, last + 2]
    assert (tmp_path / "artifact" / "adapter_model.safetensors").is_file()
