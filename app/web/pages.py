"""HTML pages. One URL gives the whole page, or only the fragment an htmx request asks for."""
from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Request, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from app.api.deps import CurrentUser, JobDep, SessionDep, StreamJobDep
from app.events.frames import SSE_HEADERS, resume_point
from app.catalog.models import DEMO_MODEL_ID, default_model_id, list_models
from app.demo_extraction import (EXTRACTION_DATASET_ID, SUGGESTED_EVAL_COUNT, SUGGESTED_EVAL_EVERY,
                                 SUGGESTED_SAMPLE_EVERY)
from app.datasets.crud import DatasetRejected, create_dataset, kind_of, list_datasets, safe_display_name
from app.events.sse import job_events
from app.jobs.crud import FieldError, create_job, downloads, list_jobs
from app.models import JOB_STATUSES
from app.methods import DEFAULT_METHOD, METHOD_LABELS, METHODS, missing_requirements
from app.web.method_fields import hyperparameter_fields, option_fields
from app.web.forms import JOB_BODY, LIFECYCLE_FIELDS, TRAINING_FIELDS, body_from_form, field_for, validation_messages
from app.web.job_estimate import estimate_context, read_workers
from app.web.job_stream import page_frames
from app.web.templating import templates
from app import storage
from app.jobs.checkpoints import CHECKPOINT_DIR, complete_checkpoints, describe
from app.serving.client import live_servers
from app.settings import get_settings
from app.workers import live_workers
from app.web import models_page
from app.web.prompt_preview import preview_context
from app.prompts import PROMPT_FORMATS
from app.schemas.hyperparameters import BATCHINGS, SEQ_LEN

PRECISION_LABELS = (("bf16", "bf16 weights"), ("mixed", "mixed: fp32 weights, bf16 autocast"), ("fp32", "fp32"))

router = APIRouter(include_in_schema=False)
router.include_router(models_page.router)  # /models: the models page and its trust switch


def _options_context(method: str, values: dict[str, str] | None = None,
                     errors: dict[str, str] | None = None) -> dict[str, Any]:
    method = method if method in METHODS else DEFAULT_METHOD
    return {
        "method": method,
        "method_label": METHOD_LABELS[method],
        "available": not missing_requirements(method),
        "fields": option_fields(method),
        "learning_rate": hyperparameter_fields(("learning_rate",), method)[0],
        "values": values or {},
        "errors": errors or {},
    }


FORM_DATASET = "demo"  # the dataset the new-job form starts on with the demo model


def _form_dataset(model: str) -> str:
    """A real model starts on the task it visibly learns (demo-extract); the demo model on its own."""
    return FORM_DATASET if model == DEMO_MODEL_ID else EXTRACTION_DATASET_ID


def _with_suggestions(values: dict[str, str], dataset: str) -> dict[str, str]:
    """The extraction task starts with rows held out, so its first job shows exact match rising.

    Only on a form the user has not filled yet: what they typed (or cleared) stays."""
    if dataset != EXTRACTION_DATASET_ID or any(
            name in values for name in ("eval_count", "eval_fraction", "eval_every", "sample_every")):
        return values
    return {"eval_count": str(SUGGESTED_EVAL_COUNT), "eval_every": str(SUGGESTED_EVAL_EVERY),
            "sample_every": str(SUGGESTED_SAMPLE_EVERY), **values}


def _seq_len(value: str | None) -> int:
    """The form's seq_len for the preview: the default when empty or not a number, within the schema's bounds."""
    try:
        return min(max(int(value or SEQ_LEN), 8), 131_072)
    except ValueError:
        return SEQ_LEN


def _preview(session: Any, user: Any, values: dict[str, str]) -> dict[str, Any]:
    model = (values.get("hub_model") or "").strip() or values.get("model") or default_model_id()
    return preview_context(session, user, model, values.get("dataset") or FORM_DATASET,
                           values.get("prompt_format") or None, _seq_len(values.get("seq_len")))


def _form_context(session: Any, user: Any, values: dict[str, str] | None = None, errors: dict[str, str] | None = None,
                  workers: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    form_model = default_model_id()
    datasets = list_datasets(session, user)
    form_dataset = _form_dataset(form_model)
    if not any(d.id == form_dataset for d in datasets):
        form_dataset = FORM_DATASET
    values = _with_suggestions(values or {}, (values or {}).get("dataset", form_dataset))
    # The live estimate of the form as rendered: its own defaults where the address gives no value.
    shown = {"model": form_model, "dataset": form_dataset, "method": DEFAULT_METHOD, **values}
    return {
        "estimate": estimate_context(session, user, shown, workers),
        **_options_context(values.get("method", DEFAULT_METHOD), values, errors),
        "form_model": form_model,
        "form_dataset": form_dataset,
        "prompt_formats": PROMPT_FORMATS,
        "batchings": BATCHINGS,
        "preview": _preview(session, user, {"dataset": form_dataset, **values}),
        "models": list_models(),
        "datasets": datasets,
        "methods": METHODS,
        "method_labels": METHOD_LABELS,
        "available_methods": [m for m in METHODS if not missing_requirements(m)],
        "training_fields": hyperparameter_fields(TRAINING_FIELDS),
        "lifecycle_fields": hyperparameter_fields(LIFECYCLE_FIELDS),
        "precisions": PRECISION_LABELS,
        "max_upload_mb": get_settings().max_upload_mb,
    }


@router.get("/")
def index() -> RedirectResponse:
    return RedirectResponse("/jobs", status_code=303)


@router.get("/jobs", response_class=HTMLResponse)
def jobs_page(
    request: Request, session: SessionDep, user: CurrentUser, status: str | None = None, method: str | None = None,
    q: str | None = None, page: int = 1, hx_request: Annotated[str | None, Header()] = None,
) -> HTMLResponse:
    page = min(max(page, 1), 10_000_000)  # a huge page number must not overflow the database's OFFSET
    status = status if status in JOB_STATUSES else None
    jobs, count = list_jobs(session, user, status=status, method=method or None, search=q or None, offset=(page - 1) * 50, limit=50)
    context = {"jobs": jobs, "count": count, "page": page, "status": status, "method": method, "q": q or "",
               "statuses": JOB_STATUSES, "methods": METHODS, "pages": max((count + 49) // 50, 1)}
    name = "partials/jobs_table.html" if hx_request else "jobs_list.html"
    response = templates.TemplateResponse(request, name, context)
    response.headers["Vary"] = "HX-Request"
    return response


@router.get("/jobs/new", response_class=HTMLResponse)
async def new_job_page(request: Request, session: SessionDep, user: CurrentUser) -> HTMLResponse:
    """The form, filled from the address (a plan row's Launch carries every setting), with its live estimate."""
    workers = await read_workers(request, session)
    context = await run_in_threadpool(_form_context, session, user, dict(request.query_params), None, workers)
    return templates.TemplateResponse(request, "job_new.html", context)


@router.get("/jobs/new/options", response_class=HTMLResponse)
def method_options(request: Request, method: str = DEFAULT_METHOD) -> HTMLResponse:
    """The options fieldset of one method, swapped in when the Method field changes; the live estimate
    asks again once it is in (`optionsSwapped`), with the new method's options."""
    response = templates.TemplateResponse(request, "partials/method_options.html",
                                          {**_options_context(method), "swap_learning_rate": True})
    response.headers["HX-Trigger-After-Settle"] = "optionsSwapped"
    return response


@router.get("/jobs/new/preview", response_class=HTMLResponse)
def prompt_preview(request: Request, session: SessionDep, user: CurrentUser) -> HTMLResponse:
    """The dataset's first row as the chosen model and prompt format train on it, swapped in on change."""
    preview = _preview(session, user, dict(request.query_params))
    return templates.TemplateResponse(request, "partials/prompt_preview.html", {"preview": preview})


@router.post("/jobs", response_class=HTMLResponse)
async def submit_job(request: Request, session: SessionDep, user: CurrentUser) -> Response:
    form = {k: str(v) for k, v in (await request.form()).items()}
    try:
        body = JOB_BODY.validate_python(body_from_form(form))
        job = await run_in_threadpool(create_job, session, body, user)
    except ValidationError as exc:
        errors = validation_messages(exc)
    except FieldError as exc:
        errors = {field_for(exc.loc): exc.message}
    else:
        return RedirectResponse(f"/jobs/{job.id}", status_code=303)
    workers = await read_workers(request, session)
    context = await run_in_threadpool(_form_context, session, user, form, errors, workers)
    return templates.TemplateResponse(request, "job_new.html", context, status_code=422)


@router.post("/datasets/upload", response_class=HTMLResponse)
async def upload_dataset_fragment(request: Request, session: SessionDep, user: CurrentUser, file: UploadFile) -> HTMLResponse:
    kind = kind_of(file.filename, file.content_type)
    errors: list[dict[str, Any]] = []
    selected = None
    if kind is None:
        errors = [{"line": 0, "error": "upload a .jsonl or .csv file"}]
    else:
        try:
            dataset = await run_in_threadpool(create_dataset, session, file.file, kind, safe_display_name(file.filename), None, user.id)
            selected = dataset.id
        except DatasetRejected as exc:
            errors = exc.errors
    context = {"datasets": list_datasets(session, user), "selected": selected, "uploaded": selected is not None,
               "upload_errors": errors}
    # 200 even when rejected: htmx swaps only successful responses, and the errors are the content.
    return templates.TemplateResponse(request, "partials/dataset_select.html", context)


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
def job_page(request: Request, job: JobDep) -> HTMLResponse:
    return templates.TemplateResponse(request, "job_detail.html", {"job": job, "downloads": downloads(job)})


@router.get("/jobs/{job_id}/summary", response_class=HTMLResponse)
def job_summary(request: Request, job: JobDep) -> HTMLResponse:
    return templates.TemplateResponse(request, "partials/job_summary.html", {"job": job, "downloads": downloads(job)})


@router.get("/jobs/{job_id}/checkpoints", response_class=HTMLResponse)
def checkpoints_fragment(request: Request, job: JobDep) -> HTMLResponse:
    items = []
    for path in complete_checkpoints(storage.job_dir(job.id) / CHECKPOINT_DIR):
        item = describe(path)
        item["download"] = f"/api/v1/jobs/{job.id}/checkpoints/{item['name']}"
        items.append(item)
    every = (job.config.get("hyperparameters") or {}).get("checkpoint_every")
    return templates.TemplateResponse(request, "partials/checkpoints.html", {"checkpoints": items, "checkpoint_every": every})


@router.get("/workers", response_class=HTMLResponse)
async def workers_page(request: Request, session: SessionDep) -> HTMLResponse:
    try:
        workers = await live_workers(request.app.state.redis, session)
        servers = await live_servers(request.app.state.redis)
        error = None
    except Exception as exc:  # noqa: BLE001 - shown on the page, not raised
        workers, servers, error = [], [], f"Cannot read worker heartbeats from Redis: {exc}"
    return templates.TemplateResponse(request, "workers.html", {"workers": workers, "servers": servers,
                                                                "error": error})


@router.get("/jobs/{job_id}/live")
async def job_live(
    request: Request, job: StreamJobDep, last_event_id: Annotated[str | None, Header()] = None
) -> StreamingResponse:
    events = job_events(request.app.state.live, job.id, resume_point(last_event_id, None))
    return StreamingResponse(page_frames(job.id, events), media_type="text/event-stream", headers=SSE_HEADERS)
