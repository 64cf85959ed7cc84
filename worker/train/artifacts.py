"""What a run leaves on disk: checkpoints along the way, the artifact and the merged model at the end.

Every folder is written with `app.storage.atomic_folder` (checkpoints through
`worker.train.checkpoint`), so a download, a resume or a crash never sees
half of one.
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from app.prompts.recorded import format_record
from app.storage import atomic_folder
from worker.methods import Method
from worker.train import checkpoint, events
from worker.train.data import BatchStream, PromptTokenizer, prompt_format_of
from worker.train.spec import TrainSpec


@dataclass(frozen=True)
class Checkpoints:
    """Writes checkpoint-<step> for one run, with what a resume needs, and prunes old ones.

    The model and optimiser are passed on each call rather than kept here, so
    that the loop can free them before the merge.
    """

    spec: TrainSpec
    method: Method
    stream: BatchStream
    total_steps: int
    schedule: dict[str, Any]

    def save(self, step: int, loss_value: float, elapsed: float,
             model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        spec, method, folder = self.spec, self.method, self.spec.checkpoints
        started = time.perf_counter()
        path = checkpoint.save(
            folder, step=step, model=model, optimizer=optimizer, method=method, method_name=spec.config.method,
            save_adapter=lambda tmp: method.save(model, tmp, spec.model_path),
            info={
                "job_id": spec.job_id, "total_steps": self.total_steps, "consumed_rows": self.stream.consumed,
                "epoch": self.stream.epoch, "loss": loss_value, "elapsed_seconds": elapsed,
                "schedule": self.schedule,
            },
        )
        removed = checkpoint.prune(folder, spec.config.hyperparameters.keep_checkpoints)
        events.log(
            f"Saved {path.name} ({time.perf_counter() - started:.2f} s)"
            + (f"; removed checkpoint-{', checkpoint-'.join(map(str, removed))}" if removed else ""),
            checkpoint={"step": step, "name": path.name},
        )


def training_record(spec: TrainSpec, steps: int, final_loss: float) -> dict[str, object]:
    """The resolved config that travels with the weights (nanoGPT does the same)."""
    return {
        "job_id": spec.job_id,
        "base_model": spec.model_path,
        "base_model_id": spec.config.model,
        "method": spec.config.method,
        "config": spec.config.model_dump(mode="json"),
        "steps": steps,
        "final_loss": final_loss,
    }


def prompt_record(spec: TrainSpec, tokenizer: PreTrainedTokenizerBase) -> dict[str, object]:
    """The prompt format the run trained with, resolved, and the chat template that renders it."""
    prompt_format = prompt_format_of(tokenizer, spec.config.hyperparameters.prompt_format)
    return format_record(prompt_format, PromptTokenizer(tokenizer).chat_template)


def save_artifact(
    method: Method,
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    spec: TrainSpec,
    record: dict[str, object],
) -> Path:
    """The method's artifact, the tokenizer and the training record, written atomically to `output_dir`.

    The tokenizer is saved with the chat template of the prompt format the run trained with (the
    model's own, or Alpaca's or plain's as jinja: app.prompts.recorded), so that stock transformers'
    `apply_chat_template(..., add_generation_prompt=True)` builds the prompt training saw; the record
    gets the resolved format and that template (and the resolved format in its hyperparameters).
    """
    prompt = prompt_record(spec, tokenizer)
    config = dict(record.get("config") or {})  # type: ignore[call-overload]
    config["hyperparameters"] = {**(config.get("hyperparameters") or {}), "prompt_format": prompt["prompt_format"]}
    record = {**record, "config": config, **prompt}
    tokenizer.chat_template = prompt["chat_template"]
    with atomic_folder(spec.output_dir) as tmp:
        method.save(model, tmp, spec.model_path)
        tokenizer.save_pretrained(str(tmp))
        (tmp / "tunedeck_training.json").write_text(json.dumps(record, indent=2), encoding="utf-8")
    return spec.output_dir


def save_merged(method: Method, artifact: Path, spec: TrainSpec) -> Path | None:
    """The merged model folder, for methods that have one and specs that ask for it.

    A failed merge is reported and leaves no merged folder, but does not fail
    the job: the adapter, the main download, is already saved.
    """
    merge = getattr(method, "merge", None)
    if merge is None or spec.merged_dir is None:
        return None
    started = time.perf_counter()
    try:
        merged = merge(artifact, spec.model_path, spec.merged_dir)
    except Exception as exc:  # noqa: BLE001 - see the docstring
        events.log(f"Merged model not written: {type(exc).__name__}: {exc}")
        shutil.rmtree(spec.merged_dir, ignore_errors=True)  # a previous attempt's would not match this adapter
        return None
    events.log(f"Saved merged model to {merged} ({time.perf_counter() - started:.1f} s)")
    return Path(merged)
