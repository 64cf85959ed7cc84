"""What the API and the inference process (`tunedeck serve`, worker/serve/) say to each other over Redis.

Why Redis and not an HTTP hop: every process of a Tunedeck install already reaches the same Redis
(workers on other machines included), so a serve process on any GPU host takes requests without
being addressed, several serve processes share one queue by simply popping from it, and the API
never needs to know where they run. The API resolves a model id to folders (ownership is its
business, `app.serving.served_models`), pushes one JSON request onto a list, and reads the answer
from a per-request stream that the serve process writes chunk by chunk; the API process never
imports torch.

A serve process keeps a heartbeat key (TTL a few seconds) saying who it is, its resident memory
and what it holds: the API refuses at once when none is alive, and notices within seconds when the
one answering a request dies (its heartbeat expires), instead of waiting for the timeout.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

REQUESTS_KEY = "tunedeck:serve:requests"  # a list: the API RPUSHes requests, serve processes BLPOP them
SERVER_KEY_PREFIX = "tunedeck:serve:server:"  # + name: the heartbeat, JSON (ServerInfo)
HEARTBEAT_TTL_SECONDS = 6
HEARTBEAT_EVERY_SECONDS = 1.0
REPLY_TTL_SECONDS = 600  # a reply stream outlives its reader by this much at most


def reply_key(request_id: str) -> str:
    """The stream a serve process writes one request's answer to."""
    return f"tunedeck:serve:reply:{request_id}"


def cancel_key(request_id: str) -> str:
    """Set by the API when the client went away or the request timed out: the serve process stops the row."""
    return f"tunedeck:serve:cancel:{request_id}"


ModelKind = Literal["base", "adapter", "standalone"]


class ServedModel(BaseModel):
    """A model id resolved to what the serve process loads (paths are absolute on the shared data dir).

    `base`: a base model folder, held once per serve process. `adapter`: a LoRA-family PEFT adapter
    loaded into its base's shared PeftModel (many adapters, one base, mixed-adapter batches).
    `standalone`: anything else, loaded as its own model (a full/freeze/GaLore result, a merged
    download, a prefix/prompt/bottleneck adapter on its own copy of the base)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    kind: ModelKind
    base_path: str  # the base folder (or hub id) the adapter sits on; the model folder itself for base
    path: str | None = None  # the adapter or standalone folder
    tokenizer_path: str  # where the tokenizer and its (recorded) chat template come from
    max_positions: int | None = None


class InferenceRequest(BaseModel):
    """One generation, as the API validated it; `messages` go through the chat template, `prompt` is raw text."""

    model_config = ConfigDict(extra="forbid")

    id: str
    model: ServedModel
    messages: list[dict[str, str]] | None = None
    prompt: str | None = None
    max_tokens: int | None = Field(None, ge=1)  # None: up to the model's context (capped by the server)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    seed: int | None = None
    stop: list[str] = []
    deadline: float  # Unix time after which nobody waits for the answer


class ServerInfo(BaseModel):
    """A serve process's heartbeat: who it is and what it holds (the Workers page shows it)."""

    name: str
    pid: int
    host: str
    device: str
    rss_bytes: int
    started_at: float
    bases: list[str] = []
    adapters: list[str] = []
    standalone: list[str] = []
    busy: bool = False
    requests_served: int = 0
    max_adapters: int = 0


# Reply stream entries: {"kind": ..., "data": JSON}. `claimed` (which server took it, the prompt's
# token count), then `delta` chunks of text, then exactly one of `done` (finish_reason, usage,
# tokens/s) or `error` (status, message, type, param, code: the OpenAI error the API answers).
ReplyKind = Literal["claimed", "delta", "done", "error"]


def error_data(status: int, message: str, *, type_: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    return {"status": status, "message": message, "type": type_, "param": param, "code": code}
