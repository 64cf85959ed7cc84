"""Describe a method's options for the job form, straight from its pydantic model.

The form never lists options by hand: a new method or option appears on the
page as soon as its model has it, with its default and one-line hint.
"""
from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Any

from pydantic.fields import FieldInfo

from app.methods import DEFAULT_METHOD, METHOD_OPTIONS, TARGET_PRESETS
from app.schemas.hyperparameters import MAX_STEPS, hyperparameters_for

LABELS = {"r": "Rank (r)", "alpha": "Alpha", "init_text": "Init text", "use_rslora": "Rank-stabilised scaling",
          "seq_len": "Sequence length"}


@dataclass(frozen=True)
class FormField:
    name: str
    label: str
    kind: str  # number | checkbox | select | text
    default: Any
    hint: str
    choices: tuple[str, ...] = ()
    step: str = "any"


def _choices(annotation: Any) -> tuple[str, ...]:
    """A Literal's values; an optional Literal (`Literal[...] | None`) starts with "", its default,
    which the form leaves out so the model's own default (e.g. QLoRA's compute dtype following the
    precision) applies."""
    if typing.get_origin(annotation) is typing.Literal:
        return tuple(str(a) for a in typing.get_args(annotation))
    args = typing.get_args(annotation)
    if type(None) in args:
        literals = [a for a in args if typing.get_origin(a) is typing.Literal]
        if len(literals) == 1 and len(args) == 2:
            return ("", *_choices(literals[0]))
    return ()


def _field(name: str, info: FieldInfo) -> FormField:
    label = LABELS.get(name, name.replace("_", " ").capitalize())
    hint = info.description or ""
    default = info.get_default(call_default_factory=True)
    annotation = info.annotation
    if name == "target_modules":
        return FormField(name, "Target modules", "select", default, hint, tuple(TARGET_PRESETS))
    if annotation is bool:
        return FormField(name, label, "checkbox", default, hint)
    if choices := _choices(annotation):
        return FormField(name, label, "select", default if default is not None else "", hint, choices)
    if annotation is int:
        return FormField(name, label, "number", default, hint, step="1")
    if annotation is float:
        return FormField(name, label, "number", default, hint)
    return FormField(name, label, "text", default if default is not None else "", hint)


def option_fields(method: str) -> list[FormField]:
    options = METHOD_OPTIONS.get(method)
    if options is None:
        return []
    return [_field(name, info) for name, info in options.model_fields.items()]


def method_config_from_form(method: str, form: dict[str, str]) -> dict[str, Any]:
    """Checkboxes are absent when off; empty inputs are left out so the model's defaults apply.

    Target modules are a preset's name or module names joined by commas (what a plan row's Launch
    carries for an explicit list, app.planner.launch_link)."""
    config: dict[str, Any] = {}
    for field in option_fields(method):
        if field.kind == "checkbox":
            config[field.name] = field.name in form
            continue
        value = (form.get(field.name) or "").strip()
        if value and field.name == "target_modules" and value not in field.choices:
            config[field.name] = [name.strip() for name in value.split(",") if name.strip()]
        elif value:
            config[field.name] = value
    return config


def hyperparameter_fields(names: tuple[str, ...], method: str = DEFAULT_METHOD) -> list[FormField]:
    """Number inputs for training settings, with the schema's defaults (the learning rate: the method's own)
    and hints; optional ones start empty."""
    model = hyperparameters_for(method if method in METHOD_OPTIONS else DEFAULT_METHOD)
    fields = []
    for name in names:
        info = model.model_fields[name]
        whole = int in (info.annotation, *typing.get_args(info.annotation))
        # max_steps is None in the schema so that epochs can replace it; unset, both mean MAX_STEPS.
        default = MAX_STEPS if name == "max_steps" else info.get_default(call_default_factory=True)
        label = LABELS.get(name, name.replace("_", " ").capitalize())
        fields.append(FormField(name, label, "number", default, info.description or "", step="1" if whole else "any"))
    return fields
