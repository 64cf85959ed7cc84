"""Preference rows (for the DPO objective): a prompt, the answer to prefer and the one not to.

Two spellings are taken: OpenAI's (`input.messages`, `preferred_output` and `non_preferred_output`,
each a list holding one assistant message) and the common one (`prompt`, `chosen`, `rejected`; the
prompt a string or chat turns, the answers strings or one assistant message each). Both are stored
as `{"messages": <the prompt's turns>, "chosen": str, "rejected": str}`.
"""
from __future__ import annotations

from typing import Any

PREFERENCE = "preference"


def is_preference(row: dict[str, Any]) -> bool:
    return "preferred_output" in row or ("chosen" in row and "rejected" in row)


def normalise_preference(row: dict[str, Any], error: type[ValueError], turns: Any) -> dict[str, Any]:
    """The stored form; `turns(list)` checks chat turns (app.datasets.formats), `error` names a bad field."""
    if "preferred_output" in row:
        prompt = row.get("input")
        if not isinstance(prompt, dict) or "messages" not in prompt:
            raise error("field `input` must be an object with `messages` (the prompt's turns)")
        messages = turns(prompt["messages"], "input.messages")
        chosen = _answer(row.get("preferred_output"), "preferred_output", error)
        rejected = _answer(row.get("non_preferred_output"), "non_preferred_output", error)
    else:
        prompt = row.get("prompt")
        if isinstance(prompt, str) and prompt.strip():
            messages = [{"role": "user", "content": prompt}]
        elif isinstance(prompt, list):
            messages = turns(prompt, "prompt")
        else:
            raise error("field `prompt` must be a non-empty string or a list of chat turns")
        chosen = _answer(row.get("chosen"), "chosen", error)
        rejected = _answer(row.get("rejected"), "rejected", error)
    if messages and messages[-1]["role"] == "assistant":
        raise error("the prompt ends with an assistant turn: the answers to compare come after a user turn")
    if chosen == rejected:
        raise error("the preferred and the other answer are the same text: nothing to learn from")
    return {"messages": messages, "chosen": chosen, "rejected": rejected}


def _answer(value: Any, field: str, error: type[ValueError]) -> str:
    """An answer: a string, or a list with one assistant message (OpenAI's), or that message itself."""
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, dict):
        if value.get("role", "assistant") != "assistant":
            raise error(f"`{field}` must be an assistant message (got role {value.get('role')!r})")
        value = value.get("content")
    if not isinstance(value, str) or not value.strip():
        raise error(f"`{field}` must be a non-empty string or one assistant message with text content")
    return value
