"""The new-job form's address for one plan row: every setting of the row, as the form's own fields.

Why its own module: the plan page builds the link and the job form reads it; the
one contract between them is the form's field names (`app.web.forms.FIELDS`, and a
method's options named after the option, `app.web.method_fields`). Why every
setting, defaults included: a setting left out falls back to the *form's* default,
which need not be the plan's (a Launch once dropped gradient checkpointing, so the
form showed 85 GiB for a row of 30.8 GiB). The row's setup is resolved as the
planner resolves it (`TrainingSetup.build` + `as_the_job_runs`), so the link carries
what the row was estimated with: the optimiser its job really takes, and no
checkpointing for a method that cannot take it (the row says so too).
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlencode

from pydantic_core import InitErrorDetails, PydanticCustomError, ValidationError

from app.planner.catalog import Catalog
from app.planner.caveats import as_the_job_runs
from app.planner.setup import TrainingSetup
from app.schemas.plan import PlanRequest

HUB_URL = re.compile(r"huggingface\.co/([\w.-]+/[\w.-]+)")
CHECKED = frozenset({"on", "true", "1", "True"})
_PLAN = PlanRequest.model_fields
STEP_FIELDS = ("seq_len", "batch_size", "gradient_accumulation")


def _text(value: Any) -> str:
    return str(value).strip() if value is not None else ""


def _model_fields(values: dict[str, Any], catalog: Catalog, local_models: set[str]) -> dict[str, str]:
    """A catalog model that is also a local folder goes in `model`, else its hub id (`hub_model`)."""
    model = _text(values.get("hub_model")) or _text(values.get("model"))
    if _text(values.get("config_json")) or not model:
        return {}
    if model in local_models:
        return {"model": model}
    entry = catalog.model(model)
    match = HUB_URL.search(entry.source) if entry is not None else None
    return {"hub_model": match.group(1) if match else model}


def _option_text(value: Any) -> str | None:
    """An option as its form input holds it: a checkbox is present only when on, a list comma-joined."""
    if value is None or value is False:
        return None
    if value is True:
        return "true"
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def _common(values: dict[str, Any]) -> dict[str, str]:
    """The row's training shape, each setting explicit (an empty plan input is the plan API's default)."""
    fields = {name: _text(values.get(name)) or str(_PLAN[name].default) for name in STEP_FIELDS}
    fields["precision"] = _text(values.get("precision")) or str(_PLAN["precision"].default)
    if _text(values.get("dataset")):
        fields["dataset"] = _text(values["dataset"])
    return fields


def method_config_of(values: dict[str, Any]) -> dict[str, Any]:
    """Per-method options the page carries: a stored plan's, reopened (`method_config_json`, a hidden input).

    The page has no option fields of its own; without this a reopened plan made through the API with
    LoRA r 64 would re-plan, and launch, with r 8 at the first change."""
    if isinstance(values.get("method_config"), dict):
        return dict(values["method_config"])
    text = _text(values.get("method_config_json"))
    if not text:
        return {}
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as exc:
        parsed = exc
    if not isinstance(parsed, dict):
        raise ValidationError.from_exception_data("PlanRequest", [InitErrorDetails(
            type=PydanticCustomError("json_invalid", "method options must be a JSON object of method: options"),
            loc=("method_config",), input=text[:100])])
    return parsed


def row_fields(method: str, values: dict[str, Any]) -> dict[str, str]:
    """One row's method, checkpointing, options and optimiser, as the job form's fields."""
    fields = {"method": method}
    checkpointing = values.get("gradient_checkpointing") is True or _text(values.get("gradient_checkpointing")) in CHECKED
    try:
        options = method_config_of(values).get(method) or {}
        setup = as_the_job_runs(TrainingSetup.build(
            method, options, optimizer=_text(values.get("optimizer")) or None, seq_len=1,
            gradient_checkpointing=checkpointing))
    except ValidationError:
        return fields  # the plan itself refuses these options; the form shows its defaults
    if checkpointing and setup.spec.checkpointing:
        fields["gradient_checkpointing"] = "true"
    for name, value in setup.options.model_dump(mode="json").items():
        if (text := _option_text(value)) is not None:
            fields[name] = text
    if "optimizer" in setup.options.model_fields:
        fields["optimizer"] = setup.optimizer  # the one the row was estimated with
    return fields


def launch_links(methods: Iterable[str], values: dict[str, Any], catalog: Catalog, local_models: set[str]
                 ) -> dict[str, str]:
    """The new-job form, pre-filled with every setting of each row (`values`: the plan form's inputs)."""
    common = {**_model_fields(values, catalog, local_models), **_common(values)}
    return {m: "/jobs/new?" + urlencode({**common, **row_fields(m, values)}) for m in methods}
