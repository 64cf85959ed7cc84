"""A rendered row as token ids and labels: THE one encoding, used by the trainer and by the form's preview.

The prompt and the answer are tokenized separately (without the tokenizer's own
special tokens) and concatenated, so the boundary between them is exact
whatever the tokenizer's merges would do there; bos and eos are added as ids
where the format asks for them (`Rendered`). Labels are IGNORE_INDEX on bos and
the prompt, the token itself on the answer and eos. Both ends cut at seq_len.

The trainer passes the transformers tokenizer, the web tier the same
`tokenizer.json` read with the `tokenizers` library (app.prompts.tokenizer).
"""
from __future__ import annotations

from typing import Any, Protocol

from app.prompts.formats import Rendered, render_row

IGNORE_INDEX = -100  # the label value torch's cross_entropy skips


class TextTokenizer(Protocol):
    """What the encoding needs of a tokenizer: text to ids with no special tokens added, and bos/eos."""

    @property
    def bos_token_id(self) -> int | None: ...

    @property
    def eos_token_id(self) -> int | None: ...

    def encode_text(self, text: str) -> list[int]: ...


def encode_rendered(tokenizer: TextTokenizer, rendered: Rendered, seq_len: int) -> tuple[list[int], list[int]]:
    """(input_ids, labels): [bos] + prompt + answer + [eos], loss on the answer and eos only."""
    prompt_ids = tokenizer.encode_text(rendered.prompt) if rendered.prompt else []
    answer_ids = tokenizer.encode_text(rendered.answer)
    bos = [tokenizer.bos_token_id] if rendered.bos and tokenizer.bos_token_id is not None else []
    eos = [tokenizer.eos_token_id] if rendered.eos and tokenizer.eos_token_id is not None else []
    input_ids = bos + prompt_ids + answer_ids + eos
    labels = [IGNORE_INDEX] * (len(bos) + len(prompt_ids)) + answer_ids + eos
    return input_ids[:seq_len], labels[:seq_len]


def encode_row(tokenizer: TextTokenizer, row: dict[str, Any], fmt: str, seq_len: int,
               chat_template: str | None = None, special_tokens: dict[str, str] | None = None
               ) -> tuple[list[int], list[int]]:
    """One dataset row in prompt format `fmt` (resolved) as (input_ids, labels)."""
    return encode_rendered(tokenizer, render_row(row, fmt, chat_template, special_tokens), seq_len)
