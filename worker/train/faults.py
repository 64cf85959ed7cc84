"""Failures injected on purpose, for the chaos tests (env `TUNEDECK_FAULT`).

The trainer must fail, stop and resume cleanly whatever goes wrong; these
hooks make each failure happen at a chosen step so that tests can watch: an
exception, a SIGKILL, a stall, CUDA running out of memory, or the disk
filling up halfway through a checkpoint.
"""
from __future__ import annotations

import errno
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from worker.train import checkpoint


@dataclass(frozen=True)
class Fault:
    """A failure to inject after a given step, for chaos tests (env TUNEDECK_FAULT)."""

    action: str  # raise | sigkill | sleep | oom | diskfull
    step: int
    seconds: float = 0.0


FAULT_ACTIONS = frozenset({"raise", "sigkill", "sleep", "oom", "diskfull"})


def parse_fault(text: str) -> Fault | None:
    """`raise@step3`, `sigkill@step5`, `sleep@step4:2.5`, `oom@step3` (out of memory after step 3)
    or `diskfull@step4` (the disk fills while checkpoint-4 is written); a typo fails the run at once."""
    if not text:
        return None
    try:
        action, _, rest = text.partition("@step")
        step_text, _, seconds = rest.partition(":")
        fault = Fault(action=action, step=int(step_text), seconds=float(seconds or 0))
    except ValueError:
        fault = None
    if fault is None or fault.action not in FAULT_ACTIONS:
        raise ValueError(f"bad TUNEDECK_FAULT {text!r}: use raise@stepN, sigkill@stepN, sleep@stepN:SECONDS, "
                         "oom@stepN or diskfull@stepN")
    return fault


def _fill_disk_at_checkpoint(step: int) -> None:
    """The next write of checkpoint-<step>'s weights stops halfway with ENOSPC, like a full disk."""
    from safetensors.torch import save as to_bytes

    real_save_file = checkpoint.save_file
    if getattr(real_save_file, "fault_armed", False):
        return

    def save_file(tensors: dict, filename: str, metadata: dict | None = None) -> None:
        if not Path(filename).parent.name.startswith(f"{checkpoint.TMP_PREFIX}checkpoint-{step}-"):
            return real_save_file(tensors, filename, metadata=metadata)
        data = to_bytes(tensors, metadata=metadata)
        with open(filename, "wb") as handle:
            handle.write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), filename)

    save_file.fault_armed = True  # type: ignore[attr-defined]
    checkpoint.save_file = save_file  # type: ignore[assignment]


def inject_fault(fault: Fault | None, step: int) -> None:
    """Called after every step (and its checkpoint): does what `fault` says if this is its step.

    `diskfull` is armed at the steps before its own, so that it is in place
    when the checkpoint of its step is written.
    """
    if fault is not None and fault.action == "diskfull" and step < fault.step:
        _fill_disk_at_checkpoint(fault.step)
    if fault is None or fault.step != step:
        return
    if fault.action == "raise":
        raise RuntimeError(f"injected fault at step {step}")
    if fault.action == "oom":
        raise torch.OutOfMemoryError(
            f"CUDA out of memory. Tried to allocate 2.00 GiB (injected fault at step {step})")
    if fault.action == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(fault.seconds)
