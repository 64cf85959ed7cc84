"""OpenAI's fine-tuning chat rows are datasets as they are (issue 16): text parts, `name`, and `weight`.

`weight` 0 on an assistant turn means "do not train on it" in OpenAI's format; Tunedeck trains on the
last assistant turn of a row, so that turn is the last one not marked 0 (the later turns are left out,
since they cannot be context for it). Refusals name the line and the field.
"""
from __future__ import annotations

import io
import json
from typing import Any

import pytest

from app.datasets.validate import normalise
from app.prompts.formats import render_row
from app.prompts.recorded import ALPACA_CHAT_TEMPLATE

pytestmark = pytest.mark.unit


def _normalised(*rows: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    raw = io.BytesIO("".join(json.dumps(r) + "\n" for r in rows).encode())
    out = io.StringIO()
    report = normalise(raw, "jsonl", out)
    return [json.loads(line) for line in out.getvalue().splitlines()], report.errors


def test_text_parts_are_joined_and_a_speaker_name_is_not_part_of_the_prompt() -> None:
    rows, errors = _normalised({"messages": [
        {"role": "user", "name": "ada", "content": [{"type": "text", "text": "Hi "}, {"type": "text", "text": "there"}]},
        {"role": "assistant", "content": "Hello"}]})
    assert not errors and rows[0]["messages"][0] == {"role": "user", "content": "Hi there"}


def test_an_assistant_turn_with_weight_0_is_not_the_one_trained() -> None:
    rows, errors = _normalised({"messages": [
        {"role": "user", "content": "a"}, {"role": "assistant", "content": "b", "weight": 1},
        {"role": "user", "content": "c"}, {"role": "assistant", "content": "d", "weight": 0}]})
    assert not errors
    for fmt, template in (("alpaca", None), ("plain", None), ("chat_template", ALPACA_CHAT_TEMPLATE)):
        rendered = render_row(rows[0], fmt, template, {})
        assert rendered.answer.startswith("b") and "d" not in rendered.prompt + rendered.answer, fmt


@pytest.mark.parametrize(("row", "message"), [
    ({"messages": [{"role": "user", "content": "a", "weight": 0}, {"role": "assistant", "content": "b"}]},
     "`messages[0].weight` must be 0 or 1, on an assistant turn"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b", "weight": 0.5}]},
     "`messages[1].weight` must be 0 or 1"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b", "weight": 0}]},
     "every assistant turn has weight 0"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "", "tool_calls": [{}]}]},
     "`messages[1].tool_calls`"),
    ({"tools": [], "messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]},
     "field `tools`"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]},
                   {"role": "assistant", "content": "b"}]}, "`messages[0].content` must be a string"),
])
def test_a_row_we_cannot_train_on_is_refused_at_its_line_naming_the_field(row: dict[str, Any], message: str) -> None:
    good = {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]}
    _, errors = _normalised(good, row)
    assert errors and errors[0]["line"] == 2 and message in errors[0]["error"], errors
