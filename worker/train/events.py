"""The line protocol between the training subprocess and the worker task.

One event per stdout line: `@@TUNEDECK@@ ` then compact JSON
`{"event": kind, "data": {...}}`, flushed at once so the parent sees it live.
Everything else the process writes (library warnings, tracebacks) is plain
log text to the parent; a prefix that no library prints keeps the two apart
without taking over stdout. This module is the only place that prints.
"""
from __future__ import annotations

import json
import math
import sys
from typing import Any, TextIO

from app.events.kinds import EventKind

PREFIX = "@@TUNEDECK@@ "
# What the training process emits: every kind but `status`, which the worker writes (app.events.kinds).
EVENT_KINDS: frozenset[str] = frozenset(EventKind) - {EventKind.STATUS}


def emit(kind: EventKind, data: dict[str, Any], stream: TextIO | None = None) -> None:
    """Write one event line; `stream` defaults to the current stdout (tests may swap it)."""
    out = stream if stream is not None else sys.stdout
    clean = {key: _json_safe(value) for key, value in data.items()}
    line = json.dumps({"event": kind, "data": clean}, separators=(",", ":"), ensure_ascii=False)
    out.write(PREFIX + line + "\n")
    out.flush()


def _json_safe(value: Any) -> Any:
    """NaN/inf become null: a diverged loss must not make the line unreadable to strict JSON parsers."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def log(message: str, **fields: Any) -> None:
    """A log line; `fields` are structured extras the API and the page read
    (`checkpoint` {step}, `sample` {step, prompt, completion}, `resumed_from`, `stopped`)."""
    emit(EventKind.LOG, {"message": message, **fields})


def metric(
    *,
    step: int,
    total: int,
    loss: float,
    learning_rate: float,
    tokens_per_second: float,
    grad_norm: float,
    epoch: float,
    **extra: Any,
) -> None:
    """`step` is the 1-based optimizer step; `epoch` counts passes over the data as a fraction.

    `extra` carries what the loop adds: `memory_mb` and `elapsed_seconds` on
    every point, `eval_loss` and `eval_exact_match` (a fraction, 0..1; absent when
    no held-out row has a prompt) at evaluation steps, `resumed: true` on the first
    point after a resume (the charts' marker).
    """
    emit(
        EventKind.METRIC,
        {
            "step": step,
            "total": total,
            "loss": loss,
            "learning_rate": learning_rate,
            "tokens_per_second": tokens_per_second,
            "grad_norm": grad_norm,
            "epoch": epoch,
            **extra,
        },
    )


def summary(
    *,
    trainable_params: int,
    total_params: int,
    peak_memory_bytes: int,
    final_loss: float,
    tokens_per_second: float,
    steps: int,
    artifact_dir: str,
    merged_dir: str | None = None,
    probe: dict[str, Any] | None = None,
    eval_loss: float | None = None,
    eval_exact_match: float | None = None,
    eval_before: dict[str, float | None] | None = None,
    **objective_scores: float | None,
) -> None:
    """The run's result (`objective_scores`: the objective's own held-out scores, e.g. DPO's rewards). `merged_dir` is the merged model folder (None if the method has none);
    `probe` is {"prompt", "next_token_logits"} of the trained model, for checking a download;
    `eval_loss` and `eval_exact_match` are the final model's on the held-out rows (absent without them),
    `eval_before` the same scores of the base model before the first step (absent after a resume)."""
    data: dict[str, Any] = {
        "trainable_params": trainable_params,
        "total_params": total_params,
        "trainable_percent": 100.0 * trainable_params / max(total_params, 1),
        "peak_memory_bytes": peak_memory_bytes,
        "final_loss": final_loss,
        "tokens_per_second": tokens_per_second,
        "steps": steps,
        "artifact_dir": artifact_dir,
        "merged_dir": merged_dir,
        "accelerator": _accelerator(),
    }
    if probe is not None:
        data["probe"] = probe
    if eval_loss is not None:
        data["eval_loss"] = eval_loss
    if eval_before:
        data["eval_before"] = eval_before
    if eval_exact_match is not None:
        data["eval_exact_match"] = eval_exact_match
    data.update({k: v for k, v in objective_scores.items() if v is not None})
    emit(EventKind.SUMMARY, data)


def _accelerator() -> str:
    """The device the trainer ran on (the first CUDA device when there is one: worker/train/loop.py), so
    the catalog's calibration groups runs by GPU. torch is the trainer's, already loaded; never imported here,
    because the worker's parent process reads this module too."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        return str(torch.cuda.get_device_name(0))
    return "CPU"


def error(message: str, type_name: str) -> None:
    emit(EventKind.ERROR, {"message": message, "type": type_name})


def parse_line(line: str) -> tuple[str, dict[str, Any]] | None:
    """For the parent: `(kind, data)` for an event line, None for plain log text.

    A line that carries the prefix but not a well-formed event is treated as
    text, so a garbled line can never crash the supervisor.
    """
    if not line.startswith(PREFIX):
        return None
    try:
        payload = json.loads(line[len(PREFIX):])
    except ValueError:
        return None
    if not isinstance(payload, dict):
        return None
    kind, data = payload.get("event"), payload.get("data")
    if kind not in EVENT_KINDS or not isinstance(data, dict):
        return None
    return kind, data
