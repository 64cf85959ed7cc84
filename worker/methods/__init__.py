"""Fine-tuning methods: each turns a loaded base model into what the loop trains.

The training loop is method-agnostic. What a method is (its options model,
defaults, traits) is declared once in `app.methods`; the module here holds
only its torch code and receives the validated options model, never a dict
to re-apply defaults to. It exposes two functions,
`build(model, options) -> model` (freeze, wrap, inject adapters) and
`save(model, output_dir, base_model_path)` (write the artifact users
download), and may add optional hooks the loop uses when present:

- `load(model_path, hyperparameters, options) -> model`: load the base
  itself (QLoRA quantises it to 4 bits at load time). Without it the loop
  loads the base in the dtype of the job's `precision` (`default_load`):
  bfloat16 for `bf16`, float32 for `mixed` (the step then runs under bf16
  autocast, `step_autocast`), `fp32` and unset.
- `own_optimizer(model, options, learning_rate, weight_decay)`: build
  the optimiser itself (GaLore needs its own parameter groups). Without it the
  loop builds the one named by the options' `optimizer` field, else AdamW.
- `merge(adapter_dir, base_model_path, out_dir) -> Path`: from the saved
  adapter, write (atomically) a plain model folder with the adapter merged
  into the base weights (LoRA, DoRA, QLoRA; see `worker.merge`).

Modules are imported on demand so that a LoRA job never imports the optional
backends another method needs (bitsandbytes, galore).
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Protocol

import torch
from transformers import AutoModelForCausalLM, PreTrainedModel

from app.methods import REGISTRY, MethodOptions

DEFAULT_OPTIMIZER = "adamw"
# hyperparameters.precision -> the dtype the base is loaded in; None (unset) is float32, as before the option.
WEIGHT_DTYPES: dict[str | None, torch.dtype] = {
    None: torch.float32, "fp32": torch.float32, "mixed": torch.float32, "bf16": torch.bfloat16,
}


class Method(Protocol):
    def build(self, model: PreTrainedModel, options: Any) -> torch.nn.Module: ...

    def save(self, model: torch.nn.Module, output_dir: Path, base_model_path: str) -> None: ...


def get_method(name: str) -> Method:
    """`worker.methods.<name>`, for a method the registry declares; any other name is a clear error."""
    if name not in REGISTRY:
        known = ", ".join(sorted(REGISTRY))
        raise ValueError(f"method {name!r} is not supported by this worker (known: {known})")
    module: Any = importlib.import_module(f"worker.methods.{name}")
    return module


def float32_base(model_path: str, dtype: torch.dtype = torch.float32) -> PreTrainedModel:
    """The base in `dtype` (float32 unless told) on the CPU; the loop moves it to the training device.

    A model's own code runs only if an admin allowed that model (app.catalog.trust)."""
    from app.catalog.trust import remote_code_allowed

    return AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype,
                                                trust_remote_code=remote_code_allowed(model_path))


def weight_dtype(hyperparameters: Any) -> torch.dtype:
    """The dtype the job's `precision` keeps the weights in: what the planner priced, not a guess."""
    return WEIGHT_DTYPES[getattr(hyperparameters, "precision", None)]


def step_autocast(hyperparameters: Any, options: MethodOptions | None = None) -> torch.dtype | None:
    """The autocast dtype a training step runs under: bfloat16 for `mixed` (fp32 weights), else none.

    QLoRA (options with `compute_dtype`) also runs under autocast when its compute dtype, by default
    the precision's, is a half type (`app.methods.qlora.autocast_for`), as the planner prices it."""
    precision = getattr(hyperparameters, "precision", None)
    if options is not None and "compute_dtype" in type(options).model_fields:
        from app.methods.qlora import autocast_for

        half = autocast_for(options, precision)
        return getattr(torch, half) if half else None
    return torch.bfloat16 if precision == "mixed" else None


def default_load(model_path: str, hyperparameters: Any, options: MethodOptions) -> PreTrainedModel:
    """The `load` hook of methods that train on the plain base, in the dtype of the job's precision."""
    return float32_base(model_path, weight_dtype(hyperparameters))


def load_base(method: Method, model_path: str, hyperparameters: Any, options: MethodOptions) -> PreTrainedModel:
    """The method's own `load` hook if it has one, else `default_load`."""
    loader = getattr(method, "load", default_load)
    return loader(model_path, hyperparameters, options)


def optimizer_name(options: MethodOptions) -> str:
    """The optimiser a job's options name; AdamW for methods without the option (their declared default)."""
    return str(getattr(options, "optimizer", None) or DEFAULT_OPTIMIZER)
