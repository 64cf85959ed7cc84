"""The method registry: every fine-tuning method declared once (see `base.MethodSpec`).

Submission (`app.jobs.crud`), the planner (`app.planner`, and the worker's
tracer), the job form (`app.web.method_fields`) and the trainer
(`worker.train`) all read these declarations; a method's torch code lives in
`worker/methods/<name>.py`. Adding a method: README, "How to add a method".
"""
from __future__ import annotations

import importlib.util
from typing import Any

from app.methods import adapters, dora, freeze, full, galore, lora, prefix, prompt, qlora
from app.methods.base import (
    TARGET_PRESETS,
    MethodError,
    MethodOptions,
    MethodSpec,
    resolve_targets,
    targets_in,
)
from app.planner.architecture import Architecture

REGISTRY: dict[str, MethodSpec] = {
    spec.name: spec
    for spec in (full.SPEC, freeze.SPEC, lora.SPEC, dora.SPEC, qlora.SPEC, galore.SPEC, adapters.SPEC,
                 prefix.SPEC, prompt.SPEC)
}
METHODS: tuple[str, ...] = tuple(REGISTRY)
DEFAULT_METHOD = "lora"  # what the form starts with: the method most fine-tuning guides begin with
METHOD_LABELS: dict[str, str] = {name: spec.label for name, spec in REGISTRY.items()}
METHOD_OPTIONS: dict[str, type[MethodOptions]] = {name: spec.options for name, spec in REGISTRY.items()}

__all__ = [
    "DEFAULT_METHOD", "METHODS", "METHOD_LABELS", "METHOD_OPTIONS", "REGISTRY", "TARGET_PRESETS",
    "MethodError", "MethodOptions", "MethodSpec", "check_against", "check_seq_len", "get_spec",
    "missing_requirements", "parse_options", "recorded_spec", "resolve_targets", "targets_in",
]


def get_spec(name: str) -> MethodSpec:
    """The declaration of `name`; an unknown method is a clear error, not a KeyError."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r} (known: {', '.join(REGISTRY)})") from None


def missing_requirements(method: str) -> list[str]:
    """The Python modules `method` needs that this installation lacks (QLoRA: bitsandbytes)."""
    return [name for name in get_spec(method).requires if importlib.util.find_spec(name) is None]


def recorded_spec(config: dict[str, Any]) -> MethodSpec | None:
    """The declaration of the method a download's training record names; None for a folder
    without one (trained elsewhere, or by an older version)."""
    method = config.get("method")
    return REGISTRY.get(method) if isinstance(method, str) else None


def parse_options(method: str, value: MethodOptions | dict[str, Any] | None) -> MethodOptions:
    """`method`'s validated options, with its defaults filled in."""
    return get_spec(method).parse(value)


def check_against(method: str, options: MethodOptions, arch: Architecture, seq_len: int) -> None:
    """THE check of a method's options against a model: submission and the planner both call it.

    Raises `MethodError` naming the option to fix. Virtual tokens take positions
    (prompt tokens are prepended to the input; prefix key/values shift every
    position by as many), so they count against the model's limit with seq_len.
    """
    spec = get_spec(method)
    spec.check(options, arch)
    limit = arch.max_positions
    virtual = int(getattr(options, "num_virtual_tokens", 0)) if spec.virtual_tokens else 0
    if limit is not None and virtual and seq_len <= limit < seq_len + virtual:
        raise MethodError(
            "num_virtual_tokens",
            f"seq_len {seq_len} + {virtual} virtual tokens is above the model's limit of {limit} positions; "
            f"use at most {limit - seq_len} virtual tokens or a shorter seq_len",
        )


def check_seq_len(arch: Architecture, seq_len: int) -> str | None:
    """Why `seq_len` does not fit the model, or None; the caller names its own field."""
    limit = arch.max_positions
    if limit is not None and seq_len > limit:
        return f"seq_len {seq_len} is above the model's limit of {limit} positions"
    return None
