"""Checkpoints a retry resumes from: written atomically, loaded without pickle from user data.

Layout (shared with the API through `app.jobs.checkpoints`):

    <job dir>/checkpoints/checkpoint-<step>/
        trainable.safetensors   every trainable parameter by its name in the model
        optimizer.pt            the optimiser's state_dict (our own file; loaded weights_only)
        rng.pt                  python, numpy (if installed) and torch RNG states
        adapter_config.json     + adapter_model.safetensors: for adapter methods, the same
                                folder a finished job downloads (PeftModel.from_pretrained
                                or our bottleneck loader read it as is)
        state.json              written last: step, data position, schedule, loss, time

A checkpoint is filled in `checkpoints/tmp-checkpoint-<step>-<pid>/`, every
file and the folder are fsynced, `state.json` goes in last, and only then is
the folder renamed to `checkpoint-<step>`. A crash at any point leaves either
the previous complete checkpoints or a `tmp-*` folder that nobody lists or
resumes from and that the next run removes. Old checkpoints are renamed to
`tmp-*` before they are deleted, for the same reason.

Trainable weights are saved by parameter name, whatever the method: the
model a resumed run builds from the same spec has the same names, so one
code path serves LoRA, full, GaLore, bottleneck adapters and the rest, and
the full-weight methods do not write their weights twice. The schedule is a
pure function of the step (`loop.lr_at`), so its state is the numbers in
`state.json`.
"""
from __future__ import annotations

import errno
import json
import os
import random
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from app.jobs.checkpoints import NAME, STATE_FILE, checkpoint_name, complete_checkpoints
from app.methods import get_spec
from app.storage import atomic_folder, fsync_tree

FORMAT_VERSION = 1
WEIGHTS_FILE = "trainable.safetensors"
OPTIMIZER_FILE = "optimizer.pt"
RNG_FILE = "rng.pt"
TMP_PREFIX = "tmp-"
# Methods whose download is a small adapter folder: a checkpoint carries it too, so that
# each checkpoint's download is usable on its own. Full-weight methods skip it (it would
# be a second copy of every weight).
def trains_an_adapter(method_name: str) -> bool:
    """The method trains new weights beside a frozen base (its declaration in `app.methods`)."""
    spec = get_spec(method_name)
    return not (spec.trains_base or spec.trains_last_layers)


@dataclass(frozen=True)
class Resumed:
    """What a loaded checkpoint tells the loop about where it stopped."""

    step: int
    consumed_rows: int
    elapsed_seconds: float
    loss: float | None
    path: Path


def _discard(path: Path) -> None:
    """Rename out of the `checkpoint-*` namespace first, then delete: never a half-deleted checkpoint."""
    doomed = path.with_name(f"{TMP_PREFIX}old-{path.name}-{os.getpid()}")
    try:
        os.rename(path, doomed)
    except FileNotFoundError:
        return
    shutil.rmtree(doomed, ignore_errors=True)
    _zip_of(path).unlink(missing_ok=True)


def _zip_of(path: Path) -> Path:
    """The API's cached download of a checkpoint."""
    return path.with_name(f"{path.name}.zip")


def remove_debris(folder: Path) -> list[str]:
    """Delete what a crashed or killed run left: `tmp-*` folders, and `checkpoint-*` folders
    without `state.json` (our writer never makes one; something else did). Returns their names."""
    if not folder.is_dir():
        return []
    complete = set(complete_checkpoints(folder))
    stale = [p for p in folder.iterdir() if p.name.startswith(TMP_PREFIX)
             or (p.is_dir() and NAME.match(p.name) and p not in complete)]
    for path in stale:
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
    return [p.name for p in stale]


def remove_all(folder: Path) -> int:
    """Drop every checkpoint (a fresh start must not leave an old run's state to resume from)."""
    found = complete_checkpoints(folder)
    for path in found:
        _discard(path)
    return len(found)


def latest(folder: Path, through: int | None = None) -> Path | None:
    """The newest complete checkpoint, or None. With `through`, the newest at or before that
    step, discarding newer ones, as long as there is one (else the newest: better a resume whose
    history misses a few metric points than starting over)."""
    found = complete_checkpoints(folder)
    recorded = [p for p in found if through is None or step_of(p) <= through]
    if not recorded:
        return found[-1] if found else None
    for path in found[len(recorded):]:
        _discard(path)
    return recorded[-1]


def step_of(path: Path) -> int:
    return int(path.name.split("-")[1])


def prune(folder: Path, keep: int) -> list[int]:
    """Keep the newest `keep` complete checkpoints; returns the steps deleted."""
    found = complete_checkpoints(folder)
    doomed = found[:-keep] if keep > 0 else found
    for path in doomed:
        _discard(path)
    return [step_of(p) for p in doomed]


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every trainable parameter by name, as contiguous CPU copies (safetensors wants those)."""
    return {name: p.detach().to("cpu").contiguous().clone() for name, p in model.named_parameters() if p.requires_grad}


def rng_state() -> dict[str, Any]:
    """Every generator the loop draws from (dropout masks, LoRA init, any numpy use)."""
    state: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    try:
        import numpy as np
    except ImportError:
        return state
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state["numpy"] = [str(kind), [int(k) for k in keys], int(pos), int(has_gauss), float(cached)]
    return state


def restore_rng(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "numpy" in state:
        import numpy as np

        kind, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))


def optimizer_state(optimizer: torch.optim.Optimizer, method: Any) -> dict[str, Any]:
    """The optimiser's state_dict in plain tensors and numbers (a method hook flattens its own objects)."""
    state = optimizer.state_dict()
    to_plain = getattr(method, "optimizer_state_to_plain", None)
    return to_plain(state) if to_plain is not None else state


def save(
    folder: Path,
    *,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    method: Any,
    method_name: str,
    save_adapter: Callable[[Path], None] | None,
    info: dict[str, Any],
) -> Path:
    """Write checkpoint-<step> atomically (see the module docstring); returns its path.

    `info` goes into state.json (step, consumed_rows, total_steps, loss,
    elapsed_seconds, schedule...). A checkpoint of the same step from an
    earlier run is replaced only once the new one is complete.
    """
    final = folder / checkpoint_name(step)
    try:
        with atomic_folder(final, tmp_prefix=TMP_PREFIX) as tmp:  # an earlier run's checkpoint-<step> is swapped out
            save_file(trainable_state(model), str(tmp / WEIGHTS_FILE), metadata={"format": "pt", "step": str(step)})
            torch.save(optimizer_state(optimizer, method), tmp / OPTIMIZER_FILE)
            torch.save(rng_state(), tmp / RNG_FILE)
            if save_adapter is not None and trains_an_adapter(method_name):
                save_adapter(tmp)
            fsync_tree(tmp)  # everything is on disk before state.json says the checkpoint is complete
            state = {
                "format": FORMAT_VERSION,
                "step": step,
                "method": method_name,
                "saved_at": datetime.now(UTC).isoformat(),
                **info,
            }
            (tmp / STATE_FILE).write_text(json.dumps(state, indent=2), encoding="utf-8")
            if final.exists():
                _zip_of(final).unlink(missing_ok=True)
    except (OSError, RuntimeError) as exc:
        raise CheckpointWriteError(step, folder, exc) from exc
    return final


class CheckpointWriteError(OSError):
    """A checkpoint that could not be written, said plainly.

    torch.save reports a full disk as "[enforce fail at inline_container.cc] unexpected pos";
    the user needs to hear "no space left" and that the previous checkpoint is still there.
    """

    def __init__(self, step: int, folder: Path, cause: BaseException) -> None:
        try:
            free = shutil.disk_usage(folder).free
        except OSError:
            free = -1
        full = getattr(cause, "errno", None) == errno.ENOSPC or "unexpected pos" in str(cause) or 0 <= free < 1024**2
        reason = f"No space left on device ({free:,} bytes free)" if full else str(cause).splitlines()[0]
        super().__init__(errno.ENOSPC if full else getattr(cause, "errno", None) or errno.EIO,
                         f"could not write the checkpoint of step {step} in {folder}: {reason}; "
                         "the previous checkpoint is intact")


def load(path: Path, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer, method: Any) -> Resumed:
    """Put a checkpoint's weights, optimiser state and RNG states back; returns where it stopped.

    The weights must match the model's trainable parameters name for name
    and shape for shape: a checkpoint of another method or model is refused
    rather than half-loaded. Nothing here unpickles: safetensors for the
    weights, `weights_only=True` for our own optimiser and RNG files.
    """
    state = json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
    weights = load_file(str(path / WEIGHTS_FILE))
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    if set(weights) != set(params):
        missing, extra = sorted(set(params) - set(weights)), sorted(set(weights) - set(params))
        raise ValueError(
            f"{path.name} does not match this model's trainable weights "
            f"(missing {missing[:3]}{'…' if len(missing) > 3 else ''}, unexpected {extra[:3]}{'…' if len(extra) > 3 else ''})"
        )
    with torch.no_grad():
        for name, param in params.items():
            if weights[name].shape != param.shape:
                raise ValueError(f"{path.name}: {name} has shape {tuple(weights[name].shape)}, the model {tuple(param.shape)}")
            param.copy_(weights[name].to(param.device, param.dtype))
    saved = torch.load(path / OPTIMIZER_FILE, map_location="cpu", weights_only=True)
    optimizer.load_state_dict(saved)
    from_plain = getattr(method, "optimizer_state_from_plain", None)
    if from_plain is not None:
        from_plain(optimizer, saved)
    restore_rng(torch.load(path / RNG_FILE, map_location="cpu", weights_only=True))
    return Resumed(
        step=int(state["step"]),
        consumed_rows=int(state["consumed_rows"]),
        elapsed_seconds=float(state.get("elapsed_seconds", 0.0)),
        loss=state.get("loss"),
        path=path,
    )
