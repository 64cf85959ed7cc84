"""The plan page: every method's memory, time and cost for the user's model, data and GPUs.

Why the form posts to fragments: the table re-renders on every change
(htmx, no reload), so the same PlanRequest the API takes is built from the
form and answered by the same service; errors come back as a 422 fragment
that names the field, exactly like the API (a refused hub id at the hub
field, with the API's message). A plan is stored only when the user presses
Save (re-planning on every keystroke filled the list with near-duplicates);
stored plans reopen at /plan?plan=<id>. "Exact" waits for the planning worker
(up to a minute) while the page shows progress.
"""
from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, QueryParams

from app.api.deps import AdminUser, CatalogDep, CurrentUser, DatasetTokensDep, JobDep, ReopenedPlanDep, SessionDep
from app.catalog.models import list_models
from app.datasets.crud import list_datasets
from app.methods import DEFAULT_METHOD
from app.planner.architecture import ArchitectureError
from app.planner.catalog_forms import gpu_from_form, model_from_form
from app.planner.db_catalog import DbCatalog, save_gpu, save_model
from app.planner.fit import fit_request
from app.planner.job_plan import achieved_tflops, job_measured
from app.planner import plan_view
from app.planner.plan_view import (
    PLAN_DEFAULTS, form_errors, launch_links, page_link, plan_request_from_form, table_context, tokens_field,
)
from app.planner.records import list_plans, owner_emails, store_plan
from app.planner.service import PlanError
from app.planner.traced import TokenCounter, TraceUnavailable, compute_plan
from app.schemas.plan import FitRequest, PlanRequest
from app.web.templating import templates

router = APIRouter(include_in_schema=False)


def _page_context(request: Request, session: Any, user: Any, catalog: DbCatalog, values: dict[str, Any]
                  ) -> dict[str, Any]:
    catalog_ids = {m.id for m in catalog.models()}
    local = [m for m in list_models() if m.id not in catalog_ids]  # ModelInfo: the select shows each one's label
    all_users = bool(user.is_admin) and request.query_params.get("plans") == "all"
    plans, _ = list_plans(session, user, limit=10, all_users=all_users)
    return {"values": values, "catalog_models": catalog.models(), "local_models": local,
            "gpus": catalog.gpus(), "datasets": list_datasets(session, user), "recent": plans,
            "all_users": all_users, "owners": owner_emails(session, plans) if all_users else {},
            "is_admin": bool(user.is_admin),
            "defaults_link": page_link({k: v for k, v in values.items() if k != "method_config_json"}),
            "methods": PlanRequest.model_fields["methods"].default_factory()}  # type: ignore[misc]


def _values(source: QueryParams | FormData | dict[str, Any]) -> dict[str, Any]:
    """Form values with the defaults under them; `gpus` and `methods` stay lists."""
    values: dict[str, Any] = dict(PLAN_DEFAULTS)
    getlist = getattr(source, "getlist", None)
    for key in source.keys():
        if key in ("gpus", "methods") and getlist is not None:
            values[key] = [str(v) for v in getlist(key)]
        else:
            values[key] = source[key]
    if isinstance(source, (QueryParams, FormData)) and "gradient_checkpointing" not in source and source.keys():
        values["gradient_checkpointing"] = ""  # an unticked box sends nothing
    return values


def _at_fields(errors: dict[str, str], values: dict[str, Any]) -> dict[str, str]:
    """A refused model typed as a hub id is that field's error (the API's message at `model`, word for word)."""
    typed_hub_id = plan_view._text(values.get("hub_model")) and not plan_view._text(values.get("config_json"))
    if typed_hub_id and "model" in errors:
        errors = {("hub_model" if key == "model" else key): message for key, message in errors.items()}
    return errors


Computed = tuple["PlanRequest | None", "dict[str, Any] | None", dict[str, str], "str | None"]


async def _compute(request: Request, values: dict[str, Any], catalog: DbCatalog, counter: TokenCounter,
                   mode: str = "instant") -> Computed:
    """(request body, answer, errors by field, notice): the same service the API answers with."""
    try:
        body = plan_request_from_form(values, mode)
        answer = await compute_plan(body, getattr(request.app.state, "redis", None), catalog, counter)
    except ValidationError as exc:
        return None, None, _at_fields(form_errors(exc.errors()), values), None
    except PlanError as exc:
        return None, None, _at_fields({".".join(map(str, exc.loc)): exc.message}, values), None
    except TraceUnavailable as exc:  # no planning worker in time: keep the instant figures and say why
        body, answer, errors, _ = await _compute(request, values, catalog, counter, "instant")
        return body, answer, errors, exc.detail
    return body, answer, {}, None


def _table_context(answer: dict[str, Any] | None, values: dict[str, Any], catalog: DbCatalog,
                   errors: dict[str, str]) -> dict[str, Any]:
    if errors or answer is None:
        return {"errors": errors, "hub_error": errors.get("hub_model", "")}
    return {**table_context(answer, values, catalog, {m.id for m in list_models()}), "hub_error": ""}


async def _table(request: Request, values: dict[str, Any], catalog: DbCatalog, session: Any, user: Any,
                 counter: TokenCounter, mode: str = "instant", save: bool = False) -> Response:
    """The table fragment; with `save` the plan shown is stored (once per request) and the list updated."""
    body, answer, errors, notice = await _compute(request, values, catalog, counter, mode)
    context = {**_table_context(answer, values, catalog, errors), "oob": True, "notice": notice}
    if save and body is not None and answer is not None:
        record = await run_in_threadpool(store_plan, session, user, body.model_dump(mode="json", exclude_none=True),
                                         answer)
        context.update(plan_id=record.id, saved=True, recent=list_plans(session, user, limit=10)[0])
    return templates.TemplateResponse(request, "plan_table.html", context, status_code=422 if errors else 200)


@router.get("/plan", response_class=HTMLResponse)
async def plan_page(request: Request, session: SessionDep, user: CurrentUser, catalog: CatalogDep,
                    record: ReopenedPlanDep, counter: DatasetTokensDep) -> Response:
    """The page; `?plan=<id>` reopens a stored plan, other query parameters pre-fill the form (nothing is stored)."""
    if record is not None:
        values = _values({k: v for k, v in record.request.items() if k not in ("method_config",)})
        if record.request.get("method_config"):
            values["method_config_json"] = json.dumps(record.request["method_config"], sort_keys=True)
        if isinstance(values.get("config"), dict):
            values["config_json"] = json.dumps(values.pop("config"), indent=1)
        known = {m.id for m in catalog.models()} | {m.id for m in list_models()}
        if values.get("model") and values["model"] not in known:  # planned for a hub id: show it in its field
            values["hub_model"] = values["model"]
        context = _page_context(request, session, user, catalog, values)
        context.update(_table_context(record.result, values, catalog, {}))
        context.update(plan_id=record.id, reopened=record, tokens_field=tokens_field(record.result, values))
        return templates.TemplateResponse(request, "plan.html", context)
    values = _values(request.query_params)
    _, answer, errors, notice = await _compute(request, values, catalog, counter)
    context = _page_context(request, session, user, catalog, values)
    context.update(_table_context(answer, values, catalog, errors), notice=notice,
                   tokens_field=tokens_field(answer, values))
    return templates.TemplateResponse(request, "plan.html", context, status_code=422 if errors else 200)


@router.post("/plan/table", response_class=HTMLResponse)
async def plan_table(request: Request, session: SessionDep, user: CurrentUser, catalog: CatalogDep,
                     counter: DatasetTokensDep) -> Response:
    """The table for the form as it is now (htmx, on every change); nothing is stored."""
    return await _table(request, _values(await request.form()), catalog, session, user, counter)


@router.post("/plan/save", response_class=HTMLResponse)
async def plan_save(request: Request, session: SessionDep, user: CurrentUser, catalog: CatalogDep,
                    counter: DatasetTokensDep) -> Response:
    """Store the plan on the page (the same request saved again is the same plan, moved to the top)."""
    values = _values(await request.form())
    mode = "traced" if values.get("save_mode") == "traced" else "instant"  # traced answers are cached: instant again
    return await _table(request, values, catalog, session, user, counter, mode=mode, save=True)


@router.post("/plan/exact", response_class=HTMLResponse)
async def plan_exact(request: Request, session: SessionDep, user: CurrentUser, catalog: CatalogDep,
                     counter: DatasetTokensDep) -> Response:
    """Trace each method on the planning worker and show those figures (waits up to a minute)."""
    return await _table(request, _values(await request.form()), catalog, session, user, counter, mode="traced")


@router.post("/plan/fit", response_class=HTMLResponse)
async def plan_fit(request: Request, user: CurrentUser, catalog: CatalogDep) -> Response:
    """Make it fit: for the chosen GPU and method, the same sequences per step split so that they fit."""
    values = _values(await request.form())
    try:
        base = plan_request_from_form(values, "instant").model_dump(exclude_none=True)
        base.update(methods=[values.get("fit_method") or DEFAULT_METHOD], gpus=[values.get("fit_gpu") or ""],
                    allow_shorter_seq_len=values.get("fit_shorter") == "on")
        body = FitRequest.model_validate(base)
        result = fit_request(body, catalog)
    except ValidationError as exc:
        return templates.TemplateResponse(request, "plan_fit.html", {"errors": form_errors(exc.errors())},
                                          status_code=422)
    except PlanError as exc:
        return templates.TemplateResponse(request, "plan_fit.html",
                                          {"errors": {".".join(map(str, exc.loc)): exc.message}}, status_code=422)
    method, gpu = body.methods[0], catalog.gpu(body.gpus[0])
    fitted = {**values, "batch_size": result.batch_size, "gradient_accumulation": result.gradient_accumulation,
              "gradient_checkpointing": "on" if result.gradient_checkpointing else "", "seq_len": result.seq_len}
    if any("instead of" in change for change in result.changes):
        fitted["optimizer"] = result.optimizer
    links = launch_links([method], fitted, catalog, {m.id for m in list_models()})
    return templates.TemplateResponse(request, "plan_fit.html", {
        "fit": result, "gpu": gpu, "method": method, "margin": catalog.runtime.fit_margin,
        "launch": links[method], "replan": page_link(fitted)})


@router.get("/jobs/{job_id}/plan", response_class=HTMLResponse)
def job_plan_fragment(request: Request, job: JobDep) -> HTMLResponse:
    """Predicted against measured, refreshed when the run ends."""
    return templates.TemplateResponse(request, "_job_plan.html", {"job": job, "measured": job_measured(job)})


for _name in ("gib", "count", "flops", "hours", "money"):
    templates.env.filters[_name] = getattr(plan_view, _name)
templates.env.globals["job_measured"] = job_measured
templates.env.globals["achieved_tflops"] = achieved_tflops


def _catalog_page(request: Request, catalog: DbCatalog, user: Any, errors: dict[str, str] | None = None,
                  saved: str | None = None, status_code: int = 200) -> HTMLResponse:
    models = []
    for entry in catalog.models():
        try:
            arch: Any = catalog.architecture(entry.id)
        except Exception:  # noqa: BLE001 - a row edited outside the page: list it, say it does not parse
            arch = None
        models.append({"entry": entry, "arch": arch})
    return templates.TemplateResponse(request, "catalog.html", {
        "gpus": catalog.gpus(), "models": models, "runtime": catalog.runtime, "is_admin": bool(user.is_admin),
        "errors": errors or {}, "saved": saved, "methods": PlanRequest.model_fields["methods"].default_factory(),  # type: ignore[misc]
    }, status_code=status_code)


@router.get("/plan/catalog", response_class=HTMLResponse)
def catalog_page(request: Request, user: CurrentUser, catalog: CatalogDep, saved: str | None = None) -> HTMLResponse:
    """GPUs and architectures the planner knows; an admin edits them here."""
    return _catalog_page(request, catalog, user, saved=saved)


@router.post("/plan/catalog/gpus", response_class=HTMLResponse)
async def catalog_save_gpu(request: Request, session: SessionDep, user: AdminUser) -> Response:
    """Add a GPU or change one (its price, memory, TFLOP/s, utilisation); admins only (403 otherwise)."""
    form = {k: str(v) for k, v in (await request.form()).items()}
    catalog = DbCatalog(session)
    try:
        spec = gpu_from_form(form, catalog.gpu(form.get("name", "")))
    except ValidationError as exc:
        return _catalog_page(request, catalog, user, errors=form_errors(exc.errors()), status_code=422)
    save_gpu(session, spec)
    return RedirectResponse(f"/plan/catalog?saved={quote(spec.name)}", status_code=303)


@router.post("/plan/catalog/models", response_class=HTMLResponse)
async def catalog_save_model(request: Request, session: SessionDep, user: AdminUser) -> Response:
    """Add an architecture (or replace one) from its config.json; admins only."""
    form = {k: str(v) for k, v in (await request.form()).items()}
    catalog = DbCatalog(session)
    try:
        entry = model_from_form(form)
        save_model(session, entry)
    except ValidationError as exc:
        return _catalog_page(request, catalog, user, errors=form_errors(exc.errors()), status_code=422)
    except ArchitectureError as exc:
        return _catalog_page(request, catalog, user, errors={f"config.{exc.field}": exc.message}, status_code=422)
    return RedirectResponse(f"/plan/catalog?saved={quote(entry.id)}", status_code=303)
