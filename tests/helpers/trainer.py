"""The training subprocess run as a worker runs it (`python -m worker.train SPEC`), and what it printed."""
from __future__ import annotations

import atexit
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from worker.train.events import parse_line

REPO_ROOT = Path(__file__).resolve().parents[2]
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


LORA_CONFIG: dict[str, Any] = {"r": 8, "alpha": 16, "dropout": 0.05, "target_modules": "attention"}


def write_spec(job_dir: Path, model: Path, dataset: Path, *, method: str = "lora",
               method_config: dict[str, Any] | None = None, merged_dir: Path | None = None,
               **hyperparameters: Any) -> Path:
    """A job spec as the worker writes it (a LoRA job on the demo unless told otherwise)."""
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
        "merged_dir": str(merged_dir) if merged_dir is not None else None,
        "config": {
            "model": "demo", "dataset": "demo", "method": method, "hyperparameters": hp,
            "method_config": LORA_CONFIG if method_config is None else method_config,
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
