"""The job form's live estimate: the peak memory of exactly what Launch would start, before Launch.

Why on the form: a plan row carries its settings into the form (app.planner.launch_link),
but the user can still change any of them; the number beside the Launch button must be
the one of the job as it stands, on the GPUs the workers really have. It is the figure
the job row will store (`app.planner.job_plan.job_plan`, on the job's own dataset), after
the same refusals submission makes (so a bad value shows its field's message instead of a
number). It re-renders on every change of the form (htmx, `hx-trigger="change"`).
"""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from app.api.deps import CurrentUser, SessionDep
from app.auth.visibility import can_see
from app.datasets.seq_len_check import seq_len_refusal
from app.jobs.crud import FieldError, check_against_model, check_combination, resolve_prompt_format
from app.models import Dataset
from app.planner.db_catalog import DbCatalog
from app.planner.estimate import RunLength, instant_estimate
from app.planner.job_plan import job_plan, plan_request_for
from app.planner.launch_link import HUB_URL
from app.planner.plan_view import gib
from app.planner.service import PlanError, build_setup, resolve_architecture
from app.web.forms import JOB_BODY, body_from_form, field_for, validation_messages
from app.web.templating import templates
from app.workers import live_workers

router = APIRouter(include_in_schema=False)


def _checked(session: Any, user: Any, body: Any) -> dict[str, str]:
    """The refusals submission would answer (app.jobs.crud.create_job), as {form field: message}."""
    try:
        check_combination(body)
        dataset = session.get(Dataset, body.dataset)
        if dataset is None or not can_see(user, dataset.owner_id):
            raise FieldError(("dataset",), f"no dataset with id {body.dataset!r}")
        check_against_model(body)
        resolve_prompt_format(body)
        hp = body.hyperparameters
        if (too_short := seq_len_refusal(session, body.dataset, body.model, hp.seq_len, hp.prompt_format)):
            raise FieldError(("hyperparameters", "seq_len"), too_short)
    except FieldError as exc:
        return {field_for(exc.loc): exc.message}
    return {}


def _catalog_twin(session: Any, model: str) -> str | None:
    """The plan catalog's id for a hub id (a row launched from a catalog model), to plan from its config."""
    for entry in DbCatalog(session).models():
        match = HUB_URL.search(entry.source or "")
        if entry.id == model or (match and match.group(1) == model):
            return entry.id
    return None


def padded_peak(session: Any, body: Any, precision: str) -> int | None:
    """The peak with every row padded to seq_len: what the plan page shows when it plans without a dataset,
    so that a row's figure and the form's (on the dataset's real rows) can be told apart on sight."""
    try:
        request = plan_request_for(body, precision)
        catalog = DbCatalog(session)
        arch = resolve_architecture(request, catalog)
        estimate = instant_estimate(arch, build_setup(request, body.method, arch), [], catalog.runtime, RunLength())
    except PlanError:
        return None
    return int(estimate["peak_bytes"])


def _worker_gpus(workers: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """The GPUs the live workers advertise (name, memory), one entry per kind of card."""
    seen: dict[tuple[str, int], dict[str, Any]] = {}
    for worker in workers or []:
        accelerator = worker.get("accelerator") or {}
        if accelerator.get("kind") == "cuda":
            key = (str(accelerator.get("name")), int(accelerator.get("memory_bytes") or 0))
            seen.setdefault(key, {"name": key[0], "memory_bytes": key[1], "workers": 0})["workers"] += 1
    return list(seen.values())


def estimate_context(session: Any, user: Any, form: dict[str, str],
                     workers: list[dict[str, Any]] | None) -> dict[str, Any]:
    """What the fragment shows: field errors, or the plan of the job the form would launch."""
    context: dict[str, Any] = {"errors": {}, "plan": None, "workers": workers, "worker_gpus": _worker_gpus(workers)}
    try:
        body = JOB_BODY.validate_python(body_from_form(form))
    except ValidationError as exc:
        context["errors"] = validation_messages(exc)
        return context
    context["errors"] = _checked(session, user, body)
    planned = body
    if "model" in context["errors"] and (twin := _catalog_twin(session, body.model)) is not None:
        planned = body.model_copy(update={"model": twin})  # not reachable here, but the catalog knows it
        context["planned_from"] = twin
    elif context["errors"]:
        return context
    on_gpu = bool(context["worker_gpus"])
    plan = job_plan(session, planned, on_gpu=on_gpu)
    context["plan"] = plan
    if "peak_bytes" in plan:
        if plan.get("dataset_lengths") and (padded := padded_peak(session, planned, plan["precision"])) is not None \
                and padded != plan["peak_bytes"]:
            context["padded_peak"] = gib(padded)
        margin = DbCatalog(session).runtime.fit_margin
        context.update(peak=gib(plan["peak_bytes"]), margin=margin, worker_fits=[
            {**g, "fits": plan["peak_bytes"] <= g["memory_bytes"] * (1 - margin)} for g in context["worker_gpus"]])
    return context


async def read_workers(request: Request, session: Any) -> list[dict[str, Any]] | None:
    """The workers' heartbeats; None when Redis cannot be read (the fragment says so)."""
    try:
        return await live_workers(request.app.state.redis, session)
    except Exception:  # noqa: BLE001 - the estimate stands without them; the fragment says they are unknown
        return None


@router.get("/jobs/new/estimate", response_class=HTMLResponse)
async def job_estimate(request: Request, session: SessionDep, user: CurrentUser) -> HTMLResponse:
    """The live estimate of the job the form would launch (htmx, on every change of the form)."""
    workers = await read_workers(request, session)
    context = await run_in_threadpool(estimate_context, session, user, dict(request.query_params), workers)
    return templates.TemplateResponse(request, "partials/job_estimate.html", {"estimate": context})
