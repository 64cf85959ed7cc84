"""The new-job form's preview: the dataset's first row as the job will train on it.

It calls `app.prompts.encode_row`, the function the trainer encodes every row
with, on the model folder's own `tokenizer.json` (read with `tokenizers`, no
torch), so the tokens shown are the tokens trained on; the trained-on part
(the answer and its end of turn) is marked. The ids themselves are in the
fragment's data attributes, for anyone (a test) who wants to compare.
"""
from __future__ import annotations

import json
from itertools import groupby
from typing import Any

from sqlmodel import Session

from app import storage
from app.auth.visibility import can_see
from app.models import Dataset, User
from app.prompts import IGNORE_INDEX, PromptFormatError, encode_row, resolve_format
from app.prompts.tokenizer import FolderTokenizer, TokenizerUnavailable, load_tokenizer, model_folder

FORMAT_LABELS = {
    "chat_template": "the model's chat template",
    "alpaca": "Alpaca (### Instruction / ### Response)",
    "plain": "plain (no template)",
}


class PreviewUnavailable(LookupError):
    """Nothing to preview (a hub model, an unknown dataset); the message says why."""


def first_row(session: Session, user: User, dataset_id: str) -> dict[str, Any]:
    dataset = session.get(Dataset, dataset_id)
    if dataset is None or not can_see(user, dataset.owner_id):
        raise PreviewUnavailable(f"no dataset with id {dataset_id!r}")
    with storage.absolute(dataset.path).open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                row: dict[str, Any] = json.loads(line)
                return row
    raise PreviewUnavailable("the dataset has no rows")


def tokenizer_for(model_id: str) -> FolderTokenizer:
    folder = model_folder(model_id)
    if folder is None:
        raise PreviewUnavailable(f"{model_id} is not a model folder on this server: no preview before it is "
                                 "downloaded (the job log shows the prompt format it trains with)")
    try:
        return load_tokenizer(folder)
    except TokenizerUnavailable as exc:
        raise PreviewUnavailable(str(exc)) from exc


def segments(tokenizer: FolderTokenizer, input_ids: list[int], labels: list[int]) -> list[dict[str, Any]]:
    """Runs of prompt tokens and of trained-on tokens, each decoded as one piece of text."""
    pairs = list(zip(input_ids, labels))
    return [
        {"text": tokenizer.decode([i for i, _ in group]), "trained": trained}
        for trained, group in ((t, list(g)) for t, g in groupby(pairs, key=lambda p: p[1] != IGNORE_INDEX))
    ]


def preview_context(session: Session, user: User, model: str, dataset: str, prompt_format: str | None,
                    seq_len: int) -> dict[str, Any]:
    """What partials/prompt_preview.html shows: the row as trained on, or why there is no preview."""
    try:
        tokenizer = tokenizer_for(model)
        row = first_row(session, user, dataset)
        fmt = resolve_format(prompt_format, tokenizer.chat_template)
        input_ids, labels = encode_row(tokenizer, row, fmt, seq_len, tokenizer.chat_template,
                                       tokenizer.special_tokens)
    except PromptFormatError as exc:
        return {"error": str(exc), "field": "prompt_format"}
    except (PreviewUnavailable, OSError, ValueError, KeyError) as exc:
        return {"error": str(exc)}
    return {
        "prompt_format": fmt, "format_label": FORMAT_LABELS[fmt], "chosen": prompt_format is not None,
        "segments": segments(tokenizer, input_ids, labels), "input_ids": input_ids, "labels": labels,
        "n_trained": sum(label != IGNORE_INDEX for label in labels), "seq_len": seq_len,
    }
