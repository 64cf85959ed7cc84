"""The playground: one prompt, up to three models (a base, adapters, checkpoints) answering side by side.

Why the requests are sent by the form's POST and only read by the columns' streams: sent together,
they reach the inference process together and share its batches (a base and its LoRA adapters run
in one forward pass), so the columns grow at the same pace and their tokens/s compare. Each column
is an SSE stream of its own answer (htmx's sse extension swaps the text in as it comes); the
request ids are kept in Redis with their owner for as long as the answer may take, so nobody else
can read a column.
"""
from __future__ import annotations

import html
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from sqlmodel import Session, select
from starlette.concurrency import run_in_threadpool

from app import storage
from app.api.deps import CurrentUser, SessionDep
from app.catalog.models import list_models
from app.events.frames import SSE_HEADERS, format_event
from app.models import Job, JobEvent, User
from app.prompts.chat import row_messages
from app.serving.client import InferenceFailed, submit
from app.serving.protocol import InferenceRequest
from app.serving.served_models import FT_ID, ModelNotServed, list_served, resolve
from app.settings import get_settings
from app.web.templating import templates

router = APIRouter()
COLUMNS = 3
OWNER_KEY = "tunedeck:playground:"  # + request id -> {"user", "model", "deadline"}
SCAN_ROWS = 20_000  # dataset rows searched for the user turns of a job's sample prompts


def _served_by_base(session: Session, user: User) -> dict[str, list[dict[str, str]]]:
    """Every model the user may try, grouped under the base model it runs on."""
    groups: dict[str, list[dict[str, str]]] = {m.id: [{"id": m.id, "label": f"{m.label} (base)"}] for m in list_models()}
    for listed in list_served(session, user):
        match = FT_ID.match(listed.id)
        if match is None:
            continue
        what = {"job": "adapter / model", "merged": "merged", "checkpoint": f"checkpoint {listed.step}"}[listed.kind]
        groups.setdefault(match.group("base"), []).append({"id": listed.id, "label": f"{listed.job_id} · {what}"})
    return groups


def held_out_prompts(session: Session, user: User, model_id: str) -> list[str]:
    """The user turns of the job's sample prompts (its held-out rows when it had some), newest samples first."""
    match = FT_ID.match(model_id or "")
    job = session.get(Job, match.group("job")) if match else None
    if job is None or not (user.is_admin or job.owner_id in (None, user.id)):
        return []
    events = session.exec(select(JobEvent).where(JobEvent.job_id == job.id, JobEvent.kind == "log")
                          .order_by(JobEvent.seq.desc())).all()  # type: ignore[attr-defined]
    shown = [e.data["sample"]["prompt"] for e in events if isinstance(e.data.get("sample"), dict)]
    wanted = list(dict.fromkeys(shown))[:6]
    found: dict[str, str] = {}
    path = storage.dataset_file(job.dataset_id)
    try:
        with path.open(encoding="utf-8") as rows:
            for number, line in enumerate(rows):
                if number >= SCAN_ROWS or len(found) == len(wanted):
                    break
                try:
                    turns = row_messages(json.loads(line))
                except (ValueError, KeyError, TypeError):
                    continue
                user_turns = [t["content"] for t in turns if t["role"] == "user"]
                for prompt in wanted:
                    if prompt not in found and user_turns and user_turns[-1] and user_turns[-1] in prompt:
                        found[prompt] = user_turns[-1]
    except OSError:
        return []
    return [found[p] for p in wanted if p in found]


def _page_context(session: Session, user: User, params: dict[str, str]) -> dict[str, Any]:
    groups = _served_by_base(session, user)
    chosen = params.get("model", "")
    match = FT_ID.match(chosen)
    base = params.get("base") or (match.group("base") if match else chosen if chosen in groups else "")
    if base not in groups:
        base = next(iter(groups), "")
    options = groups.get(base, [])
    columns = [base, chosen if match else "", ""]
    if match:  # the third column: the job's newest checkpoint before its last step (the last is the adapter)
        steps = sorted(int(o["id"].rsplit("-", 1)[1]) for o in options if o["id"].startswith(chosen + ":ckpt-"))
        job = session.get(Job, match.group("job"))
        earlier = [step for step in steps if job is None or step < job.step] or steps
        columns[2] = f"{chosen}:ckpt-{earlier[-1]}" if earlier else ""
    return {"groups": groups, "base": base, "options": options, "columns": columns,
            "samples": held_out_prompts(session, user, chosen) if match else [],
            "max_tokens_cap": get_settings().serve_max_tokens, "values": {"temperature": "0", "max_tokens": "128"}}


@router.get("/playground", response_class=HTMLResponse)
def playground(request: Request, session: SessionDep, user: CurrentUser) -> HTMLResponse:
    context = _page_context(session, user, dict(request.query_params))
    return templates.TemplateResponse(request, "playground.html", context)


@router.get("/playground/columns", response_class=HTMLResponse)
def playground_columns(request: Request, session: SessionDep, user: CurrentUser, base: str = "") -> HTMLResponse:
    """The three column selects for another base model (the form swaps them in when the base changes)."""
    context = _page_context(session, user, {"base": base})
    return templates.TemplateResponse(request, "partials/playground_selects.html", context)


def _number(form: dict[str, str], name: str, kind: type, low: float, high: float, errors: dict[str, str],
            default: Any = None) -> Any:
    text = (form.get(name) or "").strip()
    if not text:
        return default
    try:
        value = kind(text)
    except ValueError:
        errors[name] = f"{text!r} is not a number"
        return default
    if not low <= value <= high:
        errors[name] = f"must be between {low:g} and {high:g}"
    return value


def _parse(form: dict[str, str], models: list[str]) -> tuple[dict[str, Any], dict[str, str]]:
    errors: dict[str, str] = {}
    cap = get_settings().serve_max_tokens
    values = {
        "temperature": _number(form, "temperature", float, 0, 2, errors, 0.0),
        "max_tokens": _number(form, "max_tokens", int, 1, cap, errors, 128),
        "seed": _number(form, "seed", int, 0, 2**31 - 1, errors),
        "prompt": (form.get("prompt") or "").strip(),
        "system": (form.get("system") or "").strip(),
    }
    if not values["prompt"]:
        errors["prompt"] = "type a message for the models to answer"
    if not models:
        errors["columns"] = "choose at least one model"
    return values, errors


@router.post("/playground/run", response_class=HTMLResponse)
async def playground_run(request: Request, session: SessionDep, user: CurrentUser) -> Response:
    """Send one request per chosen column at once; answer with the columns, each streaming its reply."""
    form_data = await request.form()
    form = {k: str(v) for k, v in form_data.items()}
    models = [str(m) for m in form_data.getlist("column") if str(m).strip()][:COLUMNS]
    values, errors = _parse(form, models)
    served = []
    for index, model in enumerate(models):
        try:
            served.append(await run_in_threadpool(resolve, session, user, model))
        except ModelNotServed:
            errors[f"column.{index}"] = f"no model {model!r} that you may use"
    if errors:
        return templates.TemplateResponse(request, "partials/playground_columns.html", {"errors": errors},
                                          status_code=422)
    messages = ([{"role": "system", "content": values["system"]}] if values["system"] else []) + \
        [{"role": "user", "content": values["prompt"]}]
    deadline = time.time() + get_settings().serve_timeout_seconds
    redis = request.app.state.redis
    columns = []
    try:
        for model in served:
            inference = InferenceRequest(id=uuid.uuid4().hex, model=model, messages=messages,
                                         max_tokens=values["max_tokens"], temperature=values["temperature"],
                                         seed=values["seed"], deadline=deadline)
            await redis.set(OWNER_KEY + inference.id, json.dumps({"user": user.id, "deadline": deadline}),
                            ex=int(get_settings().serve_timeout_seconds) + 60)
            await submit(redis, inference)
            columns.append({"id": inference.id, "model": model.id})
    except InferenceFailed as exc:
        return templates.TemplateResponse(request, "partials/playground_columns.html",
                                          {"errors": {"columns": exc.message}}, status_code=503)
    return templates.TemplateResponse(request, "partials/playground_columns.html",
                                      {"columns": columns, "errors": {}, "seed": values["seed"],
                                       "temperature": values["temperature"]})


async def _frames(redis: Any, request_id: str, deadline: float) -> AsyncIterator[str]:
    from app.serving.client import replies

    try:
        async for kind, data in replies(redis, request_id, deadline):
            if kind == "delta":
                yield format_event(None, "delta", html.escape(data["text"]))
            elif kind == "done":
                stats = (f'<span data-finish="{html.escape(data["finish_reason"])}">{data["usage"]["completion_tokens"]} '
                         f'tokens · <span class="tps" data-tps="{data["tokens_per_second"]}">'
                         f'{data["tokens_per_second"]:.1f} tokens/s</span> · batch of {data["batch_size"]}'
                         f' · {html.escape(data["finish_reason"])}</span>')
                yield format_event(None, "done", stats)
    except InferenceFailed as exc:
        yield format_event(None, "done", f'<span class="bad" role="alert">{html.escape(exc.message)}</span>')


@router.get("/playground/stream/{request_id}")
async def playground_stream(request_id: str, request: Request, user: CurrentUser) -> StreamingResponse:
    """One column's answer as SSE: `delta` (escaped text to append) and one `done` (its figures or its error)."""
    redis = request.app.state.redis
    raw = await redis.get(OWNER_KEY + request_id[:64])
    owner = json.loads(raw) if raw else None
    if owner is None or owner.get("user") != user.id:
        raise HTTPException(404, detail="no such answer")
    return StreamingResponse(_frames(redis, request_id, float(owner["deadline"])), media_type="text/event-stream",
                             headers=SSE_HEADERS)
