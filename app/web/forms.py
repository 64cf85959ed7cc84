"""Turn the new-job form into the same JSON body the API takes, and errors back into field messages."""
from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter, ValidationError

from app.schemas.jobs import JobCreate
from app.methods import METHODS
from app.web.method_fields import method_config_from_form

JOB_BODY = TypeAdapter(JobCreate)

# Form field name -> path in the JSON body. Empty inputs are left out so defaults apply.
FIELDS: dict[str, tuple[str, ...]] = {
    "name": ("name",),
    "model": ("model",),
    "dataset": ("dataset",),
    "method": ("method",),
    "max_steps": ("hyperparameters", "max_steps"),
    "learning_rate": ("hyperparameters", "learning_rate"),
    "batch_size": ("hyperparameters", "batch_size"),
    "seq_len": ("hyperparameters", "seq_len"),
    "gradient_accumulation": ("hyperparameters", "gradient_accumulation"),
    "gradient_checkpointing": ("hyperparameters", "gradient_checkpointing"),
    "precision": ("hyperparameters", "precision"),
    "checkpoint_every": ("hyperparameters", "checkpoint_every"),
    "keep_checkpoints": ("hyperparameters", "keep_checkpoints"),
    "eval_fraction": ("hyperparameters", "eval_fraction"),
    "eval_count": ("hyperparameters", "eval_count"),
    "eval_every": ("hyperparameters", "eval_every"),
    "sample_every": ("hyperparameters", "sample_every"),
    "prompt_format": ("hyperparameters", "prompt_format"),
    "batching": ("hyperparameters", "batching"),
    "objective": ("hyperparameters", "objective"),
    "dpo_beta": ("hyperparameters", "dpo_beta"),
}
# The form's training inputs, rendered from the schema's defaults and hints; the learning rate sits with
# the method's options because its default is the method's own.
TRAINING_FIELDS: tuple[str, ...] = ("max_steps", "batch_size", "seq_len", "gradient_accumulation")
# The form's inputs under "Checkpoints and evaluation", rendered from the schema's hints.
LIFECYCLE_FIELDS: tuple[str, ...] = (
    "checkpoint_every", "keep_checkpoints", "eval_fraction", "eval_count", "eval_every", "sample_every",
)


def body_from_form(form: dict[str, str]) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for field, path in FIELDS.items():
        value = (form.get(field) or "").strip()
        if not value:
            continue
        node = body
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    config = method_config_from_form(body.get("method", ""), form)
    if config:
        body["method_config"] = config
    if form.get("hub_model", "").strip():
        body["model"] = form["hub_model"].strip()
    return body


def field_for(loc: tuple[Any, ...]) -> str:
    """Map a pydantic/FieldError location back to the form field that shows it."""
    parts = [str(p) for p in loc if p != "body" and str(p) not in METHODS]
    for field, path in FIELDS.items():
        if tuple(parts[: len(path)]) == path:
            return field
    if len(parts) >= 2 and parts[0] == "method_config":
        return parts[1]  # option inputs are named after the option
    return parts[-1] if parts else "form"


def validation_messages(exc: ValidationError) -> dict[str, str]:
    """Each error at the form field it is about: a check across fields (eval_every without held-out rows,
    max_steps with epochs, warm-up past the run) reports at the body or at `hyperparameters`, so its field
    is the first one its message names."""
    messages: dict[str, str] = {}
    for error in exc.errors():
        field = field_for(error["loc"])
        if field not in FIELDS:
            field = next((name for name in _mentioned(str(error["msg"]))), field)
        messages.setdefault(field, error["msg"])
    return messages


def _mentioned(message: str) -> list[str]:
    """Form fields a message names, in the order it names them."""
    import re

    found = [(m.start(), name) for name in FIELDS if (m := re.search(rf"\b{name}\b", message))]
    return [name for _, name in sorted(found)]
