"""Fine-tuning methods: each turns a loaded base model into what the loop trains.

The training loop is method-agnostic. A method module exposes two functions,
`build(model, method_config) -> model` (freeze, wrap, inject adapters) and
`save(model, output_dir, base_model_path)` (write the artifact users
download). Modules are imported on demand so that a LoRA job never imports
the optional backends another method needs (bitsandbytes, galore).

The optimiser is not the method's business beyond naming it: when a method's
options have an `optimizer` field (full, freeze, qlora), the loop builds
that one (`worker.methods.optimizers`); otherwise AdamW.
"""
from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import torch
from transformers import PreTrainedModel

METHOD_MODULES: dict[str, str] = {
    "full": "worker.methods.full",
    "freeze": "worker.methods.freeze",
    "lora": "worker.methods.lora",
    "dora": "worker.methods.dora",
    "prefix": "worker.methods.prefix",
    "prompt": "worker.methods.prompt",
}
DEFAULT_OPTIMIZER = "adamw"


class Method(Protocol):
    def build(self, model: PreTrainedModel, method_config: Mapping[str, Any]) -> torch.nn.Module: ...

    def save(self, model: torch.nn.Module, output_dir: Path, base_model_path: str) -> None: ...


def get_method(name: str) -> Method:
    """The module implementing `name`; a method the trainer lacks is a clear error, not a KeyError."""
    try:
        module_name = METHOD_MODULES[name]
    except KeyError:
        known = ", ".join(sorted(METHOD_MODULES))
        raise ValueError(f"method {name!r} is not supported by this worker (known: {known})") from None
    module: Any = importlib.import_module(module_name)
    return module


def optimizer_name(method_config: Mapping[str, Any]) -> str:
    """The optimiser a job asked for, AdamW when its method has no such option."""
    return str(method_config.get("optimizer") or DEFAULT_OPTIMIZER)
