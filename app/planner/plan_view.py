"""The plan page's form and table, as plain data: form values -> PlanRequest, answer -> rows.

Why apart from the routes: the form speaks strings (an unticked box sends
nothing, an empty number means "default"), the API speaks JSON; this module
is the one translation, and the table's numbers (bar widths, badges, launch
links) are computed here so the template only lays them out.
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlencode

from pydantic_core import InitErrorDetails, PydanticCustomError, ValidationError

from app.planner.catalog import Catalog
from app.planner.caveats import replans_to_mixed
from app.planner.launch_link import launch_links, method_config_of
from app.schemas.plan import PlanRequest

_API = PlanRequest.model_fields
# The training shape starts at the API's defaults (which are the job's: app.schemas.hyperparameters).
PLAN_DEFAULTS: dict[str, Any] = {
    "model": "llama-3.1-8b", "hub_model": "", "config_json": "", "dataset": "", "dataset_tokens": "10000000",
    "seq_len": str(_API["seq_len"].default), "batch_size": str(_API["batch_size"].default),
    "gradient_accumulation": str(_API["gradient_accumulation"].default), "epochs": f"{_API['epochs'].default:g}",
    "gradient_checkpointing": "on" if _API["gradient_checkpointing"].default else "",
    "precision": _API["precision"].default, "optimizer": "", "gpus": ["RTX 4090", "L40S", "A100 80GB", "H100 80GB"],
}
SEGMENTS = (  # breakdown key, legend label
    ("weights", "weights"), ("trainable_weights", "trainable weights"), ("gradients", "gradients"),
    ("optimizer", "optimiser states"), ("activations", "activations"), ("logits", "logits / loss"),
    ("runtime_overhead", "runtime overhead"),
)
NUMBERS = ("seq_len", "batch_size", "gradient_accumulation", "epochs", "dataset_tokens")
PAGE_ONLY = frozenset({"csrf_token", "fit_method", "fit_gpu", "fit_shorter", "save_mode", "plan", "plans"})


def _text(value: Any) -> str:
    return str(value).strip() if value is not None else ""


def plan_request_from_form(values: dict[str, Any], mode: str = "instant") -> PlanRequest:
    """Empty inputs fall back to the API's defaults; a pasted config.json replaces the catalog model."""
    body: dict[str, Any] = {"mode": mode}
    config_text = _text(values.get("config_json"))
    if config_text:
        try:
            body["config"] = json.loads(config_text)
        except json.JSONDecodeError as exc:
            raise ValidationError.from_exception_data("PlanRequest", [InitErrorDetails(
                type=PydanticCustomError("json_invalid", "config.json is not valid JSON: {e}", {"e": str(exc)}),
                loc=("config",), input=config_text[:100])]) from exc
    else:
        body["model"] = _text(values.get("hub_model")) or _text(values.get("model")) or None
    for name in NUMBERS:
        if _text(values.get(name)):
            body[name] = _text(values[name])
    if _text(values.get("dataset")):
        body["dataset"] = _text(values["dataset"])
        body.pop("dataset_tokens", None)
    if method_config := method_config_of(values):
        body["method_config"] = method_config
    body["gradient_checkpointing"] = _text(values.get("gradient_checkpointing")) in ("on", "true", "1", "True")
    if _text(values.get("precision")):
        body["precision"] = _text(values["precision"])
    if _text(values.get("optimizer")):
        body["optimizer"] = _text(values["optimizer"])
    gpus = [g for g in values.get("gpus") or [] if _text(g)]
    if gpus:
        body["gpus"] = gpus
    methods = [m for m in values.get("methods") or [] if _text(m)]
    if methods:
        body["methods"] = methods
    return PlanRequest.model_validate(body)


def form_errors(errors: Iterable[dict[str, Any]]) -> dict[str, str]:
    """pydantic/API error dicts -> {dotted field: message}, the field first as the 422 names it."""
    out: dict[str, str] = {}
    for error in errors:
        loc = [str(part) for part in error.get("loc", ()) if part != "body"]
        out.setdefault(".".join(loc) or "form", str(error.get("msg", "invalid")))
    return out


def _bar(estimate: dict[str, Any], widest: int) -> dict[str, Any]:
    peak = max(int(estimate["peak_bytes"]), 1)
    parts = [{"key": key, "label": label, "bytes": int(estimate["breakdown"].get(key, 0)),
              "pct": round(100 * int(estimate["breakdown"].get(key, 0)) / peak, 2)} for key, label in SEGMENTS]
    return {"width": round(100 * peak / max(widest, 1), 2), "parts": [p for p in parts if p["bytes"] > 0]}


def page_link(values: dict[str, Any], **changes: str) -> str:
    """/plan pre-filled with these form values (and `changes`): a one-click re-plan that keeps every input."""
    merged = {**values, **changes}
    pairs: list[tuple[str, str]] = []
    for key, value in merged.items():
        if key in PAGE_ONLY:
            continue
        for item in value if isinstance(value, list) else [value]:
            if _text(item):
                pairs.append((key, _text(item)))
    return "/plan?" + urlencode(pairs)


def tokens_field(answer: dict[str, Any] | None, values: dict[str, Any]) -> dict[str, Any]:
    """The Tokens input: with a dataset it shows the dataset's counted tokens, disabled; else what was typed."""
    if _text(values.get("dataset")) and answer is not None and answer.get("dataset_tokens"):
        return {"value": int(answer["dataset_tokens"]), "counted": True}
    return {"value": _text(values.get("dataset_tokens")), "counted": False}


def table_context(answer: dict[str, Any], values: dict[str, Any], catalog: Catalog, local_models: set[str]
                  ) -> dict[str, Any]:
    estimates = answer.get("estimates", [])
    widest = max((int(e["peak_bytes"]) for e in estimates), default=1)
    gpu_names = [g["name"] for g in estimates[0]["gpus"]] if estimates else []
    badges = answer.get("badges") or {}
    precision = _text(values.get("precision")) or str(_API["precision"].default)
    mixed_link = page_link(values, precision="mixed")
    rows = []
    for estimate in estimates:
        tags = [kind for kind in ("cheapest", "fastest")
                if badges.get(kind) and badges[kind]["method"] == estimate["method"]]
        rows.append({**estimate, "bar": _bar(estimate, widest), "tags": tags,
                     "badge_gpu": {kind: badges[kind]["gpu"] for kind in tags},
                     "not_applied": estimate.get("not_applied") or [],
                     "replan_mixed": mixed_link if replans_to_mixed(estimate["method"], precision) else None})
    return {"rows": rows, "gpu_names": gpu_names, "segments": SEGMENTS, "badges": badges,
            "not_ranked": [entry["method"] for entry in badges.get("not_ranked") or []],
            "dataset_tokens": answer.get("dataset_tokens"), "planned_model": answer.get("model"),
            "tokens_field": tokens_field(answer, values),
            "mode": estimates[0].get("mode", "instant") if estimates else "instant",
            "launch": launch_links([e["method"] for e in estimates], values, catalog, local_models),
            "margin": catalog.runtime.fit_margin, "errors": {}}


def gib(value: int | float | None) -> str:
    return "—" if value is None else f"{value / 2**30:.1f} GiB"


def count(value: int | float | None) -> str:
    if value is None:
        return "—"
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(value) >= size:
            return f"{value / size:.2f} {unit}"
    return str(int(value))


def flops(value: int | float | None) -> str:
    if value is None:
        return "—"
    for unit, size in (("EFLOP", 1e18), ("PFLOP", 1e15), ("TFLOP", 1e12), ("GFLOP", 1e9)):
        if value >= size:
            return f"{value / size:.2f} {unit}"
    return f"{value:.0f} FLOP"


def hours(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    return f"{seconds / 3600:.1f} h" if seconds >= 360 else f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.1f} s"


def money(value: float | None) -> str:
    if value is None:
        return "—"
    return f"${value:,.2f}" if value >= 0.01 else f"${value:.4f}"
