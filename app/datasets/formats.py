"""The row formats Tunedeck trains on, and how to recognise each.

A dataset has one format; the first good row fixes it, and a later row in a
different shape is an error on that row rather than a silent mix.
"""
from __future__ import annotations

from typing import Any

from app.datasets.preference import PREFERENCE, is_preference, normalise_preference

FORMAT_FIELDS: dict[str, tuple[str, ...]] = {
    "alpaca": ("instruction", "output"),
    "prompt_completion": ("prompt", "completion"),
    "messages": ("messages",),
    "text": ("text",),
}
CHAT_ROLES = frozenset({"system", "user", "assistant"})


class RowError(ValueError):
    """A row that cannot be trained on; the message names the field."""


def detect_format(row: dict[str, Any]) -> str:
    if is_preference(row):
        return PREFERENCE
    for name, required in FORMAT_FIELDS.items():
        if all(key in row for key in required):
            return name
    keys = ", ".join(sorted(row)) or "none"
    raise RowError(
        "no known format: expected `instruction`+`output`, `prompt`+`completion`, "
        f"`messages` or `text`, or preference pairs (`prompt`+`chosen`+`rejected`, or OpenAI's "
        f"`input`+`preferred_output`+`non_preferred_output`) (found fields: {keys})"
    )


def _text_field(row: dict[str, Any], key: str, *, required: bool = True) -> str:
    value = row.get(key)
    if value is None:
        if required:
            raise RowError(f"missing field `{key}`")
        return ""
    if not isinstance(value, str):
        raise RowError(f"field `{key}` must be a string, got {type(value).__name__}")
    if required and not value.strip():
        raise RowError(f"field `{key}` is empty")
    return value


def normalise_row(row: Any, fmt: str) -> dict[str, Any]:
    """Check one row against the dataset's format and keep only the fields we train on."""
    if not isinstance(row, dict):
        raise RowError(f"expected a JSON object, got {_json_type(row)}")
    if fmt == "alpaca":
        return {
            "instruction": _text_field(row, "instruction"),
            "input": _text_field(row, "input", required=False),
            "output": _text_field(row, "output"),
        }
    if fmt == "prompt_completion":
        return {"prompt": _text_field(row, "prompt"), "completion": _text_field(row, "completion")}
    if fmt == "text":
        return {"text": _text_field(row, "text")}
    if fmt == PREFERENCE:
        return normalise_preference(row, RowError, _turns)
    return {"messages": _messages(row)}


def _messages(row: dict[str, Any]) -> list[dict[str, Any]]:
    """Chat turns; OpenAI's fine-tuning rows as they are: text parts joined, `name` kept out of the prompt
    (chat templates do not read it), `weight` 0 on an assistant turn (not trained on) honoured."""
    messages = row.get("messages")
    for key in ("tools", "functions"):
        if key in row:
            raise RowError(f"field `{key}`: tool and function calling rows are not supported (train on text turns)")
    out = _turns(messages, "messages")
    if not any(m["role"] == "assistant" and m.get("weight", 1) for m in out):
        raise RowError("`messages` has no assistant turn to learn from" + (
            " (every assistant turn has weight 0)" if any(m["role"] == "assistant" for m in out) else ""))
    return out


def _turns(messages: Any, field: str) -> list[dict[str, Any]]:
    """Chat turns checked one by one; errors name them as `field[i].key`."""
    if not isinstance(messages, list) or not messages:
        raise RowError(f"field `{field}` must be a non-empty list")
    out: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise RowError(f"`{field}[{i}]` must be an object with `role` and `content`")
        role, content = message.get("role"), _content(message.get("content"), f"{field}[{i}]")
        if role not in CHAT_ROLES:
            raise RowError(f"`{field}[{i}].role` must be one of system, user, assistant (got {role!r})")
        for key in ("tool_calls", "function_call"):
            if message.get(key):
                raise RowError(f"`{field}[{i}].{key}`: tool and function calls are not supported")
        turn: dict[str, Any] = {"role": role, "content": content}
        if "weight" in message:
            weight = message["weight"]
            if role != "assistant" or weight not in (0, 1) or isinstance(weight, bool):
                raise RowError(f"`{field}[{i}].weight` must be 0 or 1, on an assistant turn")
            if weight == 0:
                turn["weight"] = 0
        out.append(turn)
    return out


def _content(value: Any, where: str) -> str:
    """A turn's text: a string, or OpenAI's list of `{"type": "text", "text": ...}` parts."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(isinstance(p, dict) and p.get("type") == "text"
                                                 and isinstance(p.get("text"), str) for p in value):
        return "".join(p["text"] for p in value)
    raise RowError(f"`{where}.content` must be a string (or a list of text parts)")


def _json_type(value: Any) -> str:
    return {list: "an array", str: "a string", int: "a number", float: "a number", bool: "a boolean"}.get(
        type(value), "null" if value is None else type(value).__name__
    )
