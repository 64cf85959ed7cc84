"""Chat templates rendered the way `transformers`' `apply_chat_template` renders them, without torch.

The environment copies `transformers.utils.chat_template_utils._compile_jinja_template`
(transformers 5): a sandboxed, immutable jinja2 environment with `trim_blocks` and
`lstrip_blocks`, the `loopcontrols` extension, a `tojson` filter that does not
escape HTML, `raise_exception`, `strftime_now`, `dict` and `namespace`, and the
`{% generation %}` tag (rendered as its body). The template sees the messages,
`add_generation_prompt` and the tokenizer's named special tokens (`bos_token`,
`eos_token`, …), as there. A test checks the text against `apply_chat_template`.
"""
from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache
from typing import Any

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment


class ChatTemplateError(ValueError):
    """The chat template cannot render this row as prompt + answer."""


class _Generation(jinja2.ext.Extension):
    """`{% generation %}…{% endgeneration %}` marks assistant text for transformers' masks; here it is its body."""

    tags = {"generation"}

    def parse(self, parser: Any) -> Any:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

    def _body(self, caller: Any) -> str:
        return str(caller())


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _tojson(x: Any, ensure_ascii: bool = False, indent: Any = None, separators: Any = None,
            sort_keys: bool = False) -> str:
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


class _Namespace(jinja2.utils.Namespace):
    """jinja2's namespace refusing underscore names, as transformers' does."""

    def __init__(*args: Any, **kwargs: Any) -> None:  # noqa: N805 - jinja's own signature trick
        self, rest = args[0], args[1:]
        for name in dict(*rest, **kwargs):
            if isinstance(name, str) and name.startswith("_"):
                raise jinja2.exceptions.SecurityError(f"chat templates cannot store {name!r} on a namespace")
        jinja2.utils.Namespace.__init__(self, *rest, **kwargs)


@lru_cache(maxsize=16)
def _compiled(template: str) -> jinja2.Template:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[_Generation, jinja2.ext.loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    env.globals["dict"] = dict
    env.globals["namespace"] = _Namespace
    return env.from_string(template)


def render_chat(template: str, messages: list[dict[str, str]], *, add_generation_prompt: bool,
                special_tokens: dict[str, str]) -> str:
    """The conversation as text, exactly as `apply_chat_template(..., tokenize=False)` gives it."""
    try:
        return _compiled(template).render(messages=messages, tools=None, documents=None,
                                          add_generation_prompt=add_generation_prompt, **special_tokens)
    except jinja2.exceptions.TemplateError as exc:
        raise ChatTemplateError(f"the chat template failed: {exc}") from exc


def trained_turn(messages: list[dict[str, Any]]) -> int | None:
    """The index of the assistant turn a chat row trains on: the last one not marked `weight` 0
    (OpenAI's fine-tuning rows); None when there is none."""
    return max((i for i, m in enumerate(messages) if m["role"] == "assistant" and m.get("weight", 1)), default=None)


def row_messages(row: dict[str, Any]) -> list[dict[str, Any]]:
    """A row as chat turns: instruction [+ input] or prompt is the user's turn, the answer the assistant's."""
    if "messages" in row:
        turns = [{k: m[k] for k in ("role", "content", "weight") if k in m} for m in row["messages"]]
        # A preference pair (app.datasets.preference) reads as its preferred conversation where one is
        # needed (token counts, plans, previews); the DPO trainer renders both answers itself.
        return turns + [{"role": "assistant", "content": row["chosen"]}] if "chosen" in row else turns
    if "instruction" in row:
        extra = (row.get("input") or "").strip()
        user = row["instruction"] + (f"\n\n{row['input']}" if extra else "")
        return [{"role": "user", "content": user}, {"role": "assistant", "content": row["output"]}]
    if "prompt" in row:
        return [{"role": "user", "content": row["prompt"]}, {"role": "assistant", "content": row["completion"]}]
    raise ValueError(f"row has no chat form (fields: {', '.join(sorted(row))})")


def split_chat(template: str, messages: list[dict[str, str]],
               special_tokens: dict[str, str]) -> tuple[str, str, bool]:
    """(prompt, answer, closed): the turns before the last assistant turn plus the generation prompt,
    then that turn's content and the template's end of turn (e.g. `<|im_end|>`), trailing whitespace cut.

    The trained turn is the last assistant turn not marked `weight` 0 (OpenAI's rows); turns after it
    are not context for it and are left out.

    `closed` is False when the template writes nothing after the content (the caller then adds eos).
    """
    last = trained_turn(messages)
    if last is None:
        raise ChatTemplateError("the conversation has no assistant turn to learn")
    prompt = render_chat(template, messages[:last], add_generation_prompt=True, special_tokens=special_tokens)
    full = render_chat(template, messages[: last + 1], add_generation_prompt=False, special_tokens=special_tokens)
    content = messages[last]["content"]
    if not full.startswith(prompt) or content not in full[len(prompt):]:
        raise ChatTemplateError(
            "the chat template does not render the answer after its generation prompt, so the trained part "
            "cannot be told apart; use prompt_format alpaca or plain")
    answer = full[len(prompt):]
    end = answer.rindex(content) + len(content)
    closing = answer[end:].rstrip()
    return prompt, answer[:end] + closing, bool(closing)
