"""Refuse oversized uploads while they stream, before multipart parsing buffers them.

Starlette spools a multipart file to disk before the route sees it, and only
limits non-file parts; this ASGI middleware counts the body bytes on the way
in (declared Content-Length or chunked) and answers 413 past the limit. Before
answering it reads and drops the rest of a body up to 8x the limit (at least
512 MB), so that a client that sends everything before reading the answer gets
the 413 rather than a reset connection; a larger declared length is refused
without reading.
"""
from __future__ import annotations

import json

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

UPLOAD_PATHS = ("/api/v1/datasets", "/datasets/upload", "/v1/files")
# Before the 413 goes out, the rest of the body is read and dropped (up to this much, for at most this long):
# a server that answers and closes mid-body resets the connection, and a client that sends the whole body
# before reading the answer (urllib, a browser's form post) then sees a network error, not the 413.
# A declared length past `drain_bytes` (a hostile 1 TB, say) is answered at once instead: nothing is read.
DRAIN_MIN_BYTES = 512 * 1024**2
DRAIN_IDLE_SECONDS = 5.0  # a client that stops sending is answered then


class BodyTooLarge(HTTPException):
    """An HTTPException, so the route's body parsing re-raises it as a 413 instead of a generic 400."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, detail=f"file is larger than the {max_bytes // (1024 * 1024)} MB upload limit")


class UploadLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.drain_bytes = max(8 * max_bytes, DRAIN_MIN_BYTES)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in UPLOAD_PATHS:
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            if int(declared) <= self.drain_bytes:
                await _drain(receive, self.drain_bytes)
            await self._refuse(scope, send)
            return
        seen = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await _drain(receive, self.drain_bytes)
                await self._refuse(scope, send)

    async def _refuse(self, scope: Scope, send: Send) -> None:
        limit_mb = self.max_bytes // (1024 * 1024)
        message = f"file is larger than the {limit_mb} MB upload limit (TUNEDECK_MAX_UPLOAD_MB)"
        if scope["path"].startswith("/v1/"):  # OpenAI's error shape under /v1
            payload: dict[str, object] = {"error": {"message": message, "type": "invalid_request_error",
                                                    "param": "file", "code": "file_too_large"}}
        else:
            payload = {"detail": message}
        body = json.dumps(payload).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


async def _drain(receive: Receive, limit: int) -> None:
    """Read and drop what is left of the request body (at most `limit` bytes; until the client pauses)."""
    import asyncio

    read = 0
    while read < limit:
        try:
            message = await asyncio.wait_for(receive(), timeout=DRAIN_IDLE_SECONDS)
        except (asyncio.TimeoutError, BodyTooLarge):
            return
        if message["type"] != "http.request":
            return
        read += len(message.get("body", b""))
        if not message.get("more_body", False):
            return
