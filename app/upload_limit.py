"""Refuse oversized uploads while they stream, before multipart parsing buffers them.

Starlette spools a multipart file to disk before the route sees it, and only
limits non-file parts; this ASGI middleware counts the body bytes on the way
in (declared Content-Length or chunked) and answers 413 past the limit.
"""
from __future__ import annotations

import json

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

UPLOAD_PATHS = ("/api/v1/datasets", "/datasets/upload")


class BodyTooLarge(HTTPException):
    """An HTTPException, so the route's body parsing re-raises it as a 413 instead of a generic 400."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, detail=f"file is larger than the {max_bytes // (1024 * 1024)} MB upload limit")


class UploadLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in UPLOAD_PATHS:
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send)
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
                await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        limit_mb = self.max_bytes // (1024 * 1024)
        body = json.dumps({"detail": f"file is larger than the {limit_mb} MB upload limit"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})
