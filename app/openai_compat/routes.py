"""`/v1/models`, `/v1/chat/completions`, `/v1/completions`: OpenAI's shapes over our models and jobs.

The routes are thin: the caller's model id becomes folders (`app.serving.served_models`, which
enforces ownership), the request goes to the inference process (`app.serving.client`), and its
answer comes back whole or as `chat.completion.chunk` events ending in `data: [DONE]`. An error
before the first token is a plain HTTP error (a 400 for an over-long prompt, 404 for a model the
caller has none of, 503 when no inference process runs); one after it is an `error` event, which
the official SDK raises.
"""
from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from app.api.deps import CurrentUser, SessionDep
from app.openai_compat.errors import OpenAIError, model_not_found
from app.openai_compat.schemas import ChatCompletionRequest, CompletionRequest
from app.serving.client import InferenceFailed, replies, submit
from app.serving.protocol import InferenceRequest
from app.serving.served_models import ModelNotServed, list_served, resolve
from app.settings import get_settings

router = APIRouter(tags=["openai"])


@router.get("/models")
def list_models(session: SessionDep, user: CurrentUser) -> dict[str, Any]:
    """Base models, and each succeeded job's model, checkpoints and merged download the caller may use."""
    return {"object": "list", "data": [m.public() for m in list_served(session, user)]}


@router.get("/models/{model_id:path}")
def get_model(model_id: str, session: SessionDep, user: CurrentUser) -> dict[str, Any]:
    for listed in list_served(session, user):
        if listed.id == model_id:
            return listed.public()
    raise model_not_found(model_id)


def _failed(exc: InferenceFailed) -> OpenAIError:
    return OpenAIError(exc.status, exc.message, param=exc.param, code=exc.code, type_=exc.type)


async def _start(request: Request, session: Any, user: Any, body: ChatCompletionRequest | CompletionRequest
                 ) -> tuple[InferenceRequest, AsyncIterator[tuple[str, dict[str, Any]]]]:
    """Resolve, check, send; wait for the server to claim it, so that refusals are HTTP errors."""
    settings = get_settings()
    limit = body.token_limit
    if limit is not None and limit > settings.serve_max_tokens:
        param = "max_completion_tokens" if getattr(body, "max_completion_tokens", None) else "max_tokens"
        raise OpenAIError(400, f"{param} is too large: {limit}. This server allows at most "
                               f"{settings.serve_max_tokens} (TUNEDECK_SERVE_MAX_TOKENS).", param=param,
                          code="invalid_value")
    try:
        served = await run_in_threadpool(resolve, session, user, body.model)
    except ModelNotServed:
        raise model_not_found(body.model) from None
    messages = [m.as_template_message() for m in body.messages] if isinstance(body, ChatCompletionRequest) else None
    inference = InferenceRequest(
        id=uuid.uuid4().hex, model=served, messages=messages,
        prompt=body.text if isinstance(body, CompletionRequest) else None, max_tokens=limit,
        temperature=body.temperature, top_p=body.top_p, seed=body.seed, stop=body.stops,
        deadline=time.time() + settings.serve_timeout_seconds)
    redis = request.app.state.redis
    try:
        await submit(redis, inference)
        stream = replies(redis, inference.id, inference.deadline)
        kind, _ = await anext(stream)  # "claimed": the prompt fits and a server is on it
    except InferenceFailed as exc:
        raise _failed(exc) from None
    assert kind == "claimed", kind
    return inference, stream


async def _collect(stream: AsyncIterator[tuple[str, dict[str, Any]]]) -> tuple[str, dict[str, Any]]:
    parts: list[str] = []
    try:
        async with contextlib.aclosing(stream):  # type: ignore[type-var]
            async for kind, data in stream:
                if kind == "delta":
                    parts.append(data["text"])
                elif kind == "done":
                    return "".join(parts), data
    except InferenceFailed as exc:
        raise _failed(exc) from None
    raise OpenAIError(502, "the inference process ended the answer without finishing it")


def _sse(data: dict[str, Any] | str) -> bytes:
    return f"data: {data if isinstance(data, str) else json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def _chunks(stream: AsyncIterator[tuple[str, dict[str, Any]]], make: Any, usage_chunk: Any,
                  include_usage: bool) -> AsyncIterator[bytes]:
    """The streamed answer: `make(delta_text, finish_reason)` per chunk, then usage (if asked) and [DONE]."""
    try:
        async with contextlib.aclosing(stream):  # type: ignore[type-var]
            first = make(None, None)
            if first is not None:
                yield _sse(first)
            async for kind, data in stream:
                if kind == "delta":
                    yield _sse(make(data["text"], None))
                elif kind == "done":
                    yield _sse(make("", data["finish_reason"]))
                    if include_usage:
                        yield _sse(usage_chunk(data["usage"]))
    except InferenceFailed as exc:
        yield _sse(_failed(exc).body())
    yield _sse("[DONE]")


def _streaming(stream: AsyncIterator[tuple[str, dict[str, Any]]], body: ChatCompletionRequest | CompletionRequest,
               chunk: Any, envelope: dict[str, Any]) -> StreamingResponse:
    """The SSE response; with `stream_options.include_usage`, a last chunk with no choices and the usage."""
    def usage(values: dict[str, Any]) -> dict[str, Any]:
        return {**envelope, "choices": [], "usage": {k: int(v) for k, v in values.items()}}

    include = bool(body.stream_options and body.stream_options.include_usage)
    return StreamingResponse(_chunks(stream, chunk, usage, include), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _usage(done: dict[str, Any]) -> dict[str, int]:
    return {k: int(v) for k, v in done["usage"].items()}


@router.post("/chat/completions", response_model=None)
async def chat_completions(body: ChatCompletionRequest, request: Request, session: SessionDep,
                           user: CurrentUser) -> Any:
    """OpenAI's chat completions, through the model's (recorded) chat template."""
    inference, stream = await _start(request, session, user, body)
    created, rid = int(time.time()), f"chatcmpl-{inference.id}"
    if not body.stream:
        text, done = await _collect(stream)
        return {"id": rid, "object": "chat.completion", "created": created, "model": body.model,
                "system_fingerprint": None, "usage": _usage(done),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": None},
                             "finish_reason": done["finish_reason"], "logprobs": None}]}

    def chunk(text: str | None, finish: str | None) -> dict[str, Any]:
        delta: dict[str, Any] = {"role": "assistant", "content": ""} if text is None else \
            ({"content": text} if text else {})
        return {**envelope, "system_fingerprint": None,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}

    envelope = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": body.model}
    return _streaming(stream, body, chunk, envelope)


@router.post("/completions", response_model=None)
async def completions(body: CompletionRequest, request: Request, session: SessionDep, user: CurrentUser) -> Any:
    """OpenAI's (legacy) text completions: the prompt continued as text, no chat template."""
    inference, stream = await _start(request, session, user, body)
    created, rid = int(time.time()), f"cmpl-{inference.id}"
    if not body.stream:
        text, done = await _collect(stream)
        return {"id": rid, "object": "text_completion", "created": created, "model": body.model,
                "system_fingerprint": None, "usage": _usage(done),
                "choices": [{"index": 0, "text": text, "finish_reason": done["finish_reason"], "logprobs": None}]}

    def chunk(text: str | None, finish: str | None) -> dict[str, Any] | None:
        if text is None:
            return None
        return {**envelope, "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": None}]}

    envelope = {"id": rid, "object": "text_completion", "created": created, "model": body.model}
    return _streaming(stream, body, chunk, envelope)
