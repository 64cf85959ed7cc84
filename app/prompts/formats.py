"""The three prompt formats and how a dataset row becomes (prompt, answer) text in each.

- `chat_template`: the model's own chat template (ChatML for SmolLM2): the row's
  turns rendered as transformers renders them; the answer is the last assistant
  turn's content plus the template's end of turn, so the trained model stops.
- `alpaca`: `### Instruction / ### Input / ### Response` headers (the format
  Tunedeck always used), with the tokenizer's bos in front and eos after.
- `plain`: the row's own text, the answer right after the prompt (fields and turns joined by a
  newline), nothing added but bos and eos.

No choice (None) means the chat template when the tokenizer has one, else alpaca.
`text` rows have no prompt: in every format they are the answer alone, with bos and eos.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from app.prompts.chat import ChatTemplateError, row_messages, split_chat, trained_turn

PromptFormat = Literal["chat_template", "alpaca", "plain"]
PROMPT_FORMATS: tuple[str, ...] = ("chat_template", "alpaca", "plain")
ALPACA_PROMPT = "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
ALPACA_PROMPT_NO_INPUT = "### Instruction:\n{instruction}\n\n### Response:\n"
NO_CHAT_TEMPLATE = ("this model's tokenizer has no chat template (no chat_template.jinja and no chat_template "
                    "in tokenizer_config.json); choose prompt_format alpaca or plain")


class PromptFormatError(ValueError):
    """A prompt format this model or row cannot use; the message says which to pick instead."""


def resolve_format(requested: str | None, chat_template: str | None) -> str:
    """The format a job trains with: the one asked for, else chat_template when there is one, else alpaca."""
    if requested is None:
        return "chat_template" if chat_template else "alpaca"
    if requested not in PROMPT_FORMATS:
        raise PromptFormatError(f"unknown prompt_format {requested!r}: use one of {', '.join(PROMPT_FORMATS)}")
    if requested == "chat_template" and not chat_template:
        raise PromptFormatError(NO_CHAT_TEMPLATE)
    return requested


@dataclass(frozen=True)
class Rendered:
    """A row as text: loss is taken on `answer` (and on eos when `eos`), never on `prompt`."""

    prompt: str
    answer: str
    bos: bool  # the tokenizer's bos goes in front (a chat template writes its own, if any)
    eos: bool  # the tokenizer's eos follows the answer (a chat template's end of turn does instead)


def _chat_context(messages: list[dict[str, Any]]) -> tuple[str, str]:
    last = trained_turn(messages)
    assert last is not None  # validated on upload (app.datasets.formats)
    context = "".join(f"<|{m['role']}|>\n{m['content']}\n" for m in messages[:last])
    return context + "<|assistant|>\n", messages[last]["content"]


def alpaca_pair(row: dict[str, Any]) -> tuple[str, str]:
    """(prompt, answer) in the Alpaca format; prompt/completion rows as they are, chats with role headers."""
    if "instruction" in row:
        extra = row.get("input") or ""
        template = ALPACA_PROMPT if extra.strip() else ALPACA_PROMPT_NO_INPUT
        return template.format(instruction=row["instruction"], input=extra), row["output"]
    if "prompt" in row:
        return row["prompt"], row["completion"]
    if "messages" in row:
        return _chat_context(row_messages(row))
    if "text" in row:
        return "", row["text"]
    raise ValueError(f"row has no known format (fields: {', '.join(sorted(row))})")


def plain_pair(row: dict[str, Any]) -> tuple[str, str]:
    """(prompt, answer) with no template: the answer right after the prompt's text (a prompt, or the
    instruction and input, or the earlier turns' contents, joined by newlines), nothing between."""
    if "text" in row:
        return "", row["text"]
    if "prompt" in row:
        return row["prompt"], row["completion"]
    if "instruction" in row:
        extra = row.get("input") or ""
        return row["instruction"] + (f"\n{extra}" if extra.strip() else ""), row["output"]
    messages = row_messages(row)
    last = trained_turn(messages)
    assert last is not None  # validated on upload (app.datasets.formats)
    return "\n".join(m["content"] for m in messages[:last]), messages[last]["content"]


def render_row(row: dict[str, Any], fmt: str, chat_template: str | None = None,
               special_tokens: dict[str, str] | None = None) -> Rendered:
    """One row in `fmt` (already resolved). Raises PromptFormatError when the row cannot be rendered so."""
    if fmt == "alpaca":
        return Rendered(*alpaca_pair(row), bos=True, eos=True)
    if fmt == "plain" or "text" in row:
        return Rendered(*plain_pair(row), bos=True, eos=True)
    if fmt != "chat_template":
        raise PromptFormatError(f"unknown prompt_format {fmt!r}")
    if not chat_template:
        raise PromptFormatError(NO_CHAT_TEMPLATE)
    try:
        prompt, answer, closed = split_chat(chat_template, row_messages(row), special_tokens or {})
    except ChatTemplateError as exc:
        raise PromptFormatError(str(exc)) from exc
    return Rendered(prompt, answer, bos=False, eos=not closed)
