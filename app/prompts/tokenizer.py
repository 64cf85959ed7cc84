"""A model folder's tokenizer without torch: `tokenizer.json` through the `tokenizers` library.

What transformers' fast tokenizers wrap, read from the same files: the ids,
the named special tokens of `tokenizer_config.json`, and the chat template
(`chat_template.jinja`, else `chat_template` in `tokenizer_config.json`).
The API reads only the chat template (`chat_template_of`) to check a job's
prompt format; the form's preview loads the whole tokenizer.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

# The named special tokens a chat template sees (transformers' SPECIAL_TOKENS_ATTRIBUTES).
SPECIAL_TOKEN_NAMES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")


class TokenizerUnavailable(LookupError):
    """The folder has no tokenizer the web tier can read (no tokenizer.json)."""


def _config(folder: Path) -> dict[str, Any]:
    path = folder / "tokenizer_config.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def pick_template(value: Any) -> str | None:
    """A chat template as transformers picks it without tools: the string, or the one named `default`."""
    if isinstance(value, str):
        return value or None
    if isinstance(value, dict):
        value = [{"name": k, "template": v} for k, v in value.items()]
    if isinstance(value, list):
        named = {t.get("name"): t.get("template") for t in value if isinstance(t, dict)}
        picked = named.get("default")
        return picked if isinstance(picked, str) and picked else None
    return None


def chat_template_of(folder: Path) -> str | None:
    """The folder's chat template text, or None when its tokenizer has none."""
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8") or None
    return pick_template(_config(folder).get("chat_template"))


def special_tokens_of(config: dict[str, Any]) -> dict[str, str]:
    """`bos_token` and friends as strings (old configs store them as {"content": ...})."""
    tokens = {}
    for name in SPECIAL_TOKEN_NAMES:
        value = config.get(name)
        if isinstance(value, dict):
            value = value.get("content")
        if isinstance(value, str):
            tokens[name] = value
    return tokens


@dataclass(frozen=True)
class FolderTokenizer:
    """The subset of a transformers tokenizer that the encoding and the preview use."""

    backend: Tokenizer
    special_tokens: dict[str, str]
    chat_template: str | None

    def _id(self, name: str) -> int | None:
        token = self.special_tokens.get(name)
        return self.backend.token_to_id(token) if token is not None else None

    @property
    def bos_token_id(self) -> int | None:
        return self._id("bos_token")

    @property
    def eos_token_id(self) -> int | None:
        return self._id("eos_token")

    def encode_text(self, text: str) -> list[int]:
        return list(self.backend.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: list[int]) -> str:
        return str(self.backend.decode(ids, skip_special_tokens=False))


@lru_cache(maxsize=4)
def _load(folder: str, stamp: float) -> FolderTokenizer:
    path = Path(folder)
    config = _config(path)
    return FolderTokenizer(Tokenizer.from_file(str(path / "tokenizer.json")), special_tokens_of(config),
                           chat_template_of(path))


def load_tokenizer(folder: Path) -> FolderTokenizer:
    """The folder's tokenizer (cached until tokenizer.json changes)."""
    path = folder / "tokenizer.json"
    if not path.is_file():
        raise TokenizerUnavailable(f"{folder.name} has no tokenizer.json, which the preview needs")
    return _load(str(folder), path.stat().st_mtime)


def model_folder(model_id: str) -> Path | None:
    """The model's folder under DATA_DIR/models, or None for a hub id (nothing local to read)."""
    from app.catalog.models import local_folder  # the catalog's own lookup, imported late: it reads settings

    return local_folder(model_id)
