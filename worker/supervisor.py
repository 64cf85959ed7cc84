"""Run one training subprocess and turn its output into events.

The trainer runs in its own process group so that a crash, an out-of-memory
kill or a cancel ends it (and anything it started) without touching the worker.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.events.kinds import EventKind
from app.models import JobStatus
from worker.train.events import parse_line



@dataclass
class TrainerOutcome:
    returncode: int
    summary: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    cancelled: bool = False


def _kill_group(proc: subprocess.Popen[str], sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def run_trainer(
    spec_path: Path,
    emit: Callable[[str, dict[str, Any]], object],
    should_cancel: Callable[[], bool | str],
    grace_seconds: float,
    env: dict[str, str] | None = None,
) -> TrainerOutcome:
    proc = subprocess.Popen(
        [sys.executable, "-u", "-m", "worker.train", str(spec_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        errors="replace",
        bufsize=1,
        start_new_session=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )
    outcome = TrainerOutcome(returncode=0)
    done = threading.Event()
    watcher = threading.Thread(
        target=_watch_cancel, args=(proc, should_cancel, grace_seconds, done, outcome, emit), daemon=True
    )
    watcher.start()
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            _handle_line(line.rstrip("\n"), emit, outcome)
        outcome.returncode = proc.wait()
    finally:
        done.set()
        if proc.poll() is None:
            _kill_group(proc, signal.SIGKILL)
            proc.wait()
        # Anything the trainer started itself goes with it.
        _kill_group(proc, signal.SIGKILL)
    return outcome


def _handle_line(line: str, emit: Callable[[str, dict[str, Any]], object], outcome: TrainerOutcome) -> None:
    parsed = parse_line(line)
    if parsed is None:  # plain text, or a garbled event line: a log line either way
        if line.strip():
            emit(EventKind.LOG, {"message": line})
        return
    kind, data = parsed
    if kind == EventKind.SUMMARY:
        outcome.summary = data
    elif kind == EventKind.ERROR:
        outcome.error = str(data.get("message") or "training failed")
        emit(EventKind.LOG, {"message": f"Error: {outcome.error}", "level": "error"})
    elif kind in {EventKind.LOG, EventKind.METRIC}:
        emit(kind, data)


def _watch_cancel(
    proc: subprocess.Popen[str],
    should_cancel: Callable[[], bool | str],
    grace_seconds: float,
    done: threading.Event,
    outcome: TrainerOutcome,
    emit: Callable[[str, dict[str, Any]], object],
) -> None:
    """Ask the trainer to stop (SIGTERM: it saves and exits), then kill it after the grace period."""
    while not done.wait(1.0):
        try:
            cancel = should_cancel()
        except Exception:  # noqa: BLE001 - a database hiccup must not kill the run
            continue
        if not cancel:
            continue
        outcome.cancelled = True
        pausing = cancel == JobStatus.PAUSING  # a pause stops the same way; it ends paused, not cancelled
        emit(EventKind.STATUS, {"status": JobStatus.PAUSING if pausing else JobStatus.CANCELLING})
        emit(EventKind.LOG, {"message": f"{'Pause' if pausing else 'Cancel'} requested: stopping at the next step"})
        _kill_group(proc, signal.SIGTERM)
        if not done.wait(grace_seconds):
            emit(EventKind.LOG, {"message": f"Trainer did not stop within {grace_seconds:.0f}s: killed"})
            _kill_group(proc, signal.SIGKILL)
        return
