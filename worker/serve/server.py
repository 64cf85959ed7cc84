"""`tunedeck serve`: take generation requests from Redis, batch what can share a forward pass, stream answers.

Static batching: the first waiting request opens a batch; every other waiting request that can join
it (the same base model, LoRA adapters mixed freely, the same sampling; a seeded sampled request
runs alone so its seed means the same as in a fresh process) joins, up to `max_batch` rows. What
arrives while a batch runs waits in Redis for the next one. A heartbeat thread keeps this process's
key alive with its memory and what it holds; the API reads it to refuse at once when no server is
up and to notice within seconds when this one dies mid-answer.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import psutil
import redis

from app.serving.protocol import (HEARTBEAT_EVERY_SECONDS, HEARTBEAT_TTL_SECONDS, REPLY_TTL_SECONDS,
                                  REQUESTS_KEY, SERVER_KEY_PREFIX, InferenceRequest, ServerInfo, cancel_key,
                                  error_data, reply_key)
from worker.serve.generation import Row, Sampling, run_batch
from worker.serve.models import ModelHolder, uses_dora

log = logging.getLogger(__name__)
GATHER_SECONDS = 0.03  # after the first request, how long to wait for others to batch with it


@dataclass
class _Waiting:
    request: InferenceRequest
    group: str  # requests of one group can share a batch


def _group(request: InferenceRequest) -> str:
    """Which batch a request can join, known without loading anything."""
    served = request.model
    if served.kind == "standalone":
        where = f"standalone:{served.id}"
    elif served.kind == "adapter" and served.path and uses_dora(served.path):
        where = f"dora:{served.id}"
    else:
        where = f"base:{served.base_path}"
    if request.temperature == 0:
        return f"{where}|greedy"
    if request.seed is not None:
        return f"{where}|seed:{request.id}"  # alone
    return f"{where}|sample:{request.temperature}:{request.top_p}"


class Server:
    def __init__(self, redis_url: str, *, name: str, device: str, max_loaded: int, max_batch: int,
                 max_tokens_cap: int) -> None:
        self.redis = redis.Redis.from_url(redis_url, socket_connect_timeout=5)
        self.name, self.device = name, device
        self.models = ModelHolder(device, max_loaded)
        self.max_batch, self.max_tokens_cap = max_batch, max_tokens_cap
        self.waiting: deque[_Waiting] = deque()
        self.stopping = threading.Event()
        self.busy = False
        self.served = 0
        self.started_at = time.time()

    # -- replies ------------------------------------------------------------------------
    def exchange(self, messages: list[tuple[str, str, dict[str, Any]]], live: list[str]) -> set[str]:
        """Write `messages` to their reply streams and read which `live` requests were cancelled, in one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        for request_id, kind, data in messages:
            key = reply_key(request_id)
            pipe.xadd(key, {"kind": kind, "data": json.dumps(data)}, maxlen=5000, approximate=True)
            pipe.expire(key, REPLY_TTL_SECONDS)
        for request_id in live:
            pipe.exists(cancel_key(request_id))
        flags = pipe.execute()[2 * len(messages):]
        return {rid for rid, gone in zip(live, flags) if gone}

    def emit(self, request_id: str, kind: str, data: dict[str, Any]) -> None:
        self.exchange([(request_id, kind, data)], [])

    def fail(self, request_id: str, status: int, message: str, **extra: Any) -> None:
        self.emit(request_id, "error", error_data(status, message, **extra))

    # -- heartbeat ----------------------------------------------------------------------
    def info(self) -> ServerInfo:
        return ServerInfo(name=self.name, pid=os.getpid(), host=socket.gethostname(), device=self.device,
                          rss_bytes=psutil.Process().memory_info().rss, started_at=self.started_at,
                          busy=self.busy, requests_served=self.served, max_adapters=self.models.max_loaded,
                          **self.models.holding())

    def _beat(self) -> None:
        while not self.stopping.is_set():
            try:
                self.redis.set(SERVER_KEY_PREFIX + self.name, self.info().model_dump_json(), ex=HEARTBEAT_TTL_SECONDS)
            except redis.RedisError as exc:
                log.warning("heartbeat not written: %s", exc)
            self.stopping.wait(HEARTBEAT_EVERY_SECONDS)
        self.redis.delete(SERVER_KEY_PREFIX + self.name)

    # -- the loop -----------------------------------------------------------------------
    def _take(self, block: bool) -> None:
        """Move requests from Redis to the local queue (blocking for the first when asked)."""
        raws: list[bytes] = []
        if block:
            popped = self.redis.blpop([REQUESTS_KEY], timeout=1)
            if popped is None:
                return
            raws.append(popped[1])
            time.sleep(GATHER_SECONDS)
        raws += self.redis.lpop(REQUESTS_KEY, self.max_batch * 4) or []
        for raw in raws:
            try:
                request = InferenceRequest.model_validate_json(raw)
            except ValueError as exc:
                log.error("dropping a malformed request: %s", exc)
                continue
            self.waiting.append(_Waiting(request, _group(request)))

    def _next_batch(self) -> list[InferenceRequest]:
        """The oldest waiting request and every later one that can share its forward pass."""
        first = self.waiting.popleft()
        batch, models, rest = [first.request], {first.request.model.id}, deque()
        alone = "|seed:" in first.group
        for item in self.waiting:
            model = item.request.model.id
            if (not alone and item.group == first.group and len(batch) < self.max_batch
                    and (model in models or len(models) < self.models.max_loaded)):
                batch.append(item.request)
                models.add(model)
            else:
                rest.append(item)
        self.waiting = rest
        return batch

    def _row(self, request: InferenceRequest) -> tuple[Row, Any] | None:
        """The request tokenised onto its model; None (after replying with the error) when it cannot run."""
        if time.time() > request.deadline:
            self.fail(request.id, 504, "the request waited longer than its timeout for the inference process",
                      type_="timeout", code="timeout")
            return None
        try:
            slot = self.models.slot(request.model)
        except (OSError, ValueError) as exc:
            self.fail(request.id, 500, f"cannot load {request.model.id}: {exc}", type_="server_error")
            return None
        tok = slot.tokenizer
        try:
            if request.messages is not None:
                ids = list(tok.apply_chat_template(request.messages, chat_template=slot.chat_template,
                                                   add_generation_prompt=True, tokenize=True,
                                                   return_dict=True)["input_ids"])
            else:
                ids = list(tok(request.prompt or "")["input_ids"])
        except Exception as exc:  # noqa: BLE001 - a chat template may refuse a conversation (e.g. its roles)
            self.fail(request.id, 400, f"the model's chat template refused these messages: {exc}", param="messages")
            return None
        context = request.model.max_positions or getattr(slot.model.config, "max_position_embeddings", None)
        room = (context - len(ids)) if context else self.max_tokens_cap
        wanted = request.max_tokens or min(room, self.max_tokens_cap)
        if context and len(ids) + wanted > context:
            self.fail(request.id, 400, f"This model's maximum context length is {context} tokens. However, you "
                      f"requested {len(ids) + wanted} tokens ({len(ids)} in the messages, {wanted} in the "
                      "completion). Please reduce the length of the messages or completion.",
                      param="messages", code="context_length_exceeded")
            return None
        row = Row(request.id, ids, wanted, list(request.stop), adapter=slot.adapter)
        self.emit(request.id, "claimed", {"server": self.name, "prompt_tokens": len(ids)})
        return row, slot

    def run_once(self) -> None:
        self._take(block=not self.waiting)
        if not self.waiting:
            return
        batch = self._next_batch()
        prepared = [(r, p) for r in batch if (p := self._row(r)) is not None]
        if not prepared:
            return
        first = batch[0]
        rows = [row for _, (row, _) in prepared]
        slot = prepared[0][1][1]
        sampling = Sampling(first.temperature, first.top_p, first.seed)
        log.info("batch of %d rows (%s)", len(rows), ", ".join(sorted({r.model.id for r in batch})))
        self.busy = True
        try:
            run_batch(slot.model, slot.tokenizer, rows, sampling, self.exchange,
                      exclusive_adapter=slot.adapter if slot.exclusive else None)
        except Exception as exc:  # noqa: BLE001 - every row of the batch gets the error, the server goes on
            log.exception("generation failed")
            for row in rows:
                if row.finish is None:
                    self.fail(row.request_id, 500, f"generation failed: {type(exc).__name__}: {exc}",
                              type_="server_error")
        finally:
            self.busy = False
            self.served += len(rows)

    def serve_forever(self) -> None:
        beat = threading.Thread(target=self._beat, name="heartbeat", daemon=True)
        beat.start()
        log.info("serving as %s on %s (at most %d adapters or models, %d rows a batch)", self.name, self.device,
                 self.models.max_loaded, self.max_batch)
        while not self.stopping.is_set():
            try:
                self.run_once()
            except redis.RedisError as exc:
                log.warning("Redis unavailable (%s); retrying", exc)
                time.sleep(1)
        beat.join(timeout=5)


def main() -> int:
    from app.settings import get_settings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = get_settings()
    device = settings.serve_device
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    server = Server(settings.resolved_redis_url, name=f"serve@{socket.gethostname()}:{os.getpid()}", device=device,
                    max_loaded=settings.serve_max_adapters, max_batch=settings.serve_max_batch,
                    max_tokens_cap=settings.serve_max_tokens)

    def stop(_signum: int, _frame: object) -> None:
        server.stopping.set()

    import peft  # noqa: F401 - loaded once at start (with bitsandbytes): the first adapter request pays no import

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server.serve_forever()
    return 0
