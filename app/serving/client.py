"""The API's side of the inference process: send a request, follow its answer, notice when nobody answers.

Async throughout: an API process holds many streams at once and `/healthz` must not wait behind
them. The answer is followed with blocking XREADs of at most a second, so that between chunks the
reader checks the deadline and, once a server claimed the request, that server's heartbeat: a
serve process killed mid-answer gives the client an error within a few seconds, not at the timeout.
"""
from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

from app.serving.protocol import (REPLY_TTL_SECONDS, REQUESTS_KEY, SERVER_KEY_PREFIX, InferenceRequest, ServerInfo,
                                  cancel_key, reply_key)

POLL_MS = 1000


class InferenceFailed(Exception):
    """An answer that is an error, in the fields of OpenAI's error object, with its HTTP status."""

    def __init__(self, status: int, message: str, type_: str = "server_error", param: str | None = None,
                 code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> "InferenceFailed":
        return cls(int(data.get("status", 500)), str(data.get("message", "inference failed")),
                   str(data.get("type", "server_error")), data.get("param"), data.get("code"))


async def live_servers(redis: Any) -> list[ServerInfo]:
    """The serve processes whose heartbeat is current."""
    servers = []
    async for key in redis.scan_iter(match=SERVER_KEY_PREFIX + "*", count=100):
        raw = await redis.get(key)
        if raw:
            try:
                servers.append(ServerInfo.model_validate_json(raw))
            except ValueError:
                continue
    return sorted(servers, key=lambda s: s.name)


def _no_server() -> InferenceFailed:
    return InferenceFailed(503, "no inference process is running: `tunedeck up` starts one, or run `tunedeck serve`",
                           "server_error", code="no_inference_server")


async def submit(redis: Any, request: InferenceRequest) -> None:
    if not await live_servers(redis):
        raise _no_server()
    await redis.rpush(REQUESTS_KEY, request.model_dump_json())


async def cancel(redis: Any, request_id: str) -> None:
    """Ask the serve process to stop this request's row (the client left, or it timed out)."""
    await redis.set(cancel_key(request_id), "1", ex=REPLY_TTL_SECONDS)


async def replies(redis: Any, request_id: str, deadline: float) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """(kind, data) of the answer as it comes: `claimed`, `delta`s, then `done`; an `error` raises."""
    key, last, server = reply_key(request_id), "0-0", None
    try:
        while True:
            remaining = deadline - time.time()
            if remaining <= 0:
                raise InferenceFailed(504, "no answer within the request timeout (TUNEDECK_SERVE_TIMEOUT_SECONDS)",
                                      "timeout", code="timeout")
            found = await redis.xread({key: last}, block=int(min(POLL_MS, remaining * 1000)) or 1, count=200)
            if not found:
                if server is not None and not await redis.exists(SERVER_KEY_PREFIX + server):
                    raise InferenceFailed(502, f"the inference process answering this request ({server}) stopped; "
                                               "it is restarted by `tunedeck up`: try again", code="server_stopped")
                if server is None and not await live_servers(redis):
                    raise _no_server()
                continue
            for entry_id, fields in found[0][1]:
                last = entry_id
                kind, data = fields[b"kind"].decode(), json.loads(fields[b"data"])
                if kind == "claimed":
                    server = data.get("server")
                if kind == "error":
                    raise InferenceFailed.from_data(data)
                yield kind, data
                if kind == "done":
                    return
    except BaseException:
        await cancel(redis, request_id)
        raise
    finally:
        await redis.delete(key)
