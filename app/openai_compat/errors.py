"""Errors under /v1 in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`, with OpenAI's statuses.

Why a shape of its own: the official SDKs (and LiteLLM, Kiln, …) read `error.message` and `param` to
tell the user what was wrong; FastAPI's `{"detail": [...]}` would reach them as an unexplained 4xx.
Validation errors are 400s naming the parameter as OpenAI writes it (`messages.[0].role`).
"""
from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

PREFIX = "/v1/"
TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 403: "invalid_request_error",
         404: "invalid_request_error", 409: "invalid_request_error", 413: "invalid_request_error",
         422: "invalid_request_error", 429: "rate_limit_exceeded"}


class OpenAIError(Exception):
    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 type_: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.type = type_ or TYPES.get(status, "server_error")

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if self.status == 401 else None
        return JSONResponse(self.body(), status_code=self.status, headers=headers)


def is_openai_path(request: Request) -> bool:
    return request.url.path.startswith(PREFIX)


def param_name(loc: tuple[Any, ...] | list[Any]) -> str:
    """pydantic's location as OpenAI names a parameter: ("body", "messages", 0, "role") -> messages.[0].role."""
    parts = [f"[{p}]" if isinstance(p, int) else str(p) for p in loc if p != "body"]
    return ".".join(parts)


def model_not_found(model: str) -> OpenAIError:
    return OpenAIError(404, f"The model `{model}` does not exist or you do not have access to it.",
                       param="model", code="model_not_found")


async def openai_error_handler(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, OpenAIError)
    return exc.response()


def validation_error(exc: RequestValidationError) -> JSONResponse:
    """The first problem, as OpenAI reports one (a 400 naming its parameter)."""
    error = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
    param = param_name(error.get("loc", ()))
    kind = error.get("type", "")
    if kind == "extra_forbidden":
        message = f"Unrecognized request argument supplied: {param}"
    elif kind == "missing":
        message = f"Missing required parameter: '{param}'."
    elif kind in {"json_invalid", "model_attributes_type"}:
        message = "We could not parse the JSON body of your request. (HINT: This likely means you aren't using " \
                  "your HTTP library correctly. The OpenAI API expects a JSON payload.)"
        param = None  # type: ignore[assignment]
    else:
        message = f"Invalid value for '{param}': {str(error.get('msg', 'invalid')).removeprefix('Value error, ')}"
    return OpenAIError(400, message, param=param or None, code="invalid_value" if kind not in
                       {"missing", "extra_forbidden"} else None).response()


def http_error(status: int, detail: Any) -> JSONResponse:
    return OpenAIError(status, detail if isinstance(detail, str) else str(detail)).response()


def unauthenticated() -> JSONResponse:
    return OpenAIError(401, "Incorrect API key provided. Create a token on the Settings page and pass it as "
                            "the API key (Authorization: Bearer <token>).", code="invalid_api_key").response()
