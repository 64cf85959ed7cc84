"""Every row's token length as the trainer will see it, counted with the model's own tokenizer, cached.

Why count and not estimate: a BPE vocabulary spends anywhere from 2 to 6 bytes a token, so bytes ÷ 4
misplaces both the time and the padded widths the memory peak depends on. The count renders each
row in the job's prompt format and tokenizes prompt and answer apart, exactly as
`app.prompts.encode_row` does for the trainer (bos and eos as the format adds them), but in one
`encode_batch` call per side. Where the model's tokenizer is not here (a catalog architecture, a hub
id), the lengths are estimated from the rendered text's bytes and the figure says so (`how`).

The counts are cached per (dataset file, model tokenizer, prompt format): in memory, and on disk
under DATA_DIR/cache/token_lengths so a restart does not count again. A file's identity is its
path, size and modification time; the tokenizer's is its tokenizer.json's.
"""
from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.planner.lengths import RowLength
from app.prompts import PromptFormatError, Rendered, render_row, resolve_format
from app.prompts.tokenizer import FolderTokenizer, TokenizerUnavailable, load_tokenizer, model_folder

CACHE_VERSION = 1
_memory: dict[str, "DatasetLengths"] = {}
_lock = threading.Lock()


@dataclass(frozen=True)
class DatasetLengths:
    """A dataset's rows as token lengths, and how they were obtained (for the plan's note)."""

    rows: tuple[RowLength, ...]
    counted: bool  # True: the model's tokenizer; False: an estimate from bytes
    how: str
    prompt_format: str
    seconds: float  # how long the count took (0 when it came from a cache)

    @property
    def tokens(self) -> int:
        return sum(r.total for r in self.rows)


def _read_rows(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _render(rows: list[dict[str, Any]], fmt: str, template: str | None, special: dict[str, str]
            ) -> list[Rendered]:
    """Each row in `fmt`; a row the chat template cannot render falls back to alpaca, as a plan only."""
    out = []
    for row in rows:
        try:
            out.append(render_row(row, fmt, template, special))
        except PromptFormatError:
            out.append(render_row(row, "alpaca"))
    return out


def _count(tokenizer: FolderTokenizer, rendered: list[Rendered]) -> tuple[RowLength, ...]:
    """bos + prompt + answer + eos per row, as `encode_rendered` builds them (before the seq_len cut)."""
    encode = tokenizer.backend.encode_batch
    prompts = [len(e.ids) for e in encode([r.prompt for r in rendered], add_special_tokens=False)]
    answers = [len(e.ids) for e in encode([r.answer for r in rendered], add_special_tokens=False)]
    bos, eos = tokenizer.bos_token_id is not None, tokenizer.eos_token_id is not None
    lengths = []
    for r, p, a in zip(rendered, prompts, answers):
        p = p if r.prompt else 0
        head = (1 if r.bos and bos else 0) + p
        lengths.append(RowLength(total=head + a + (1 if r.eos and eos else 0), prompt=head))
    return tuple(lengths)


def _estimate(rendered: list[Rendered], bytes_per_token: float) -> tuple[RowLength, ...]:
    lengths = []
    for r in rendered:
        head = int(r.bos) + round(len(r.prompt.encode("utf-8")) / bytes_per_token)
        answer = max(1, round(len(r.answer.encode("utf-8")) / bytes_per_token))
        lengths.append(RowLength(total=head + answer + int(r.eos), prompt=head))
    return tuple(lengths)


def _stamp(path: Path) -> str:
    stat = path.stat()
    return f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"


def _disk_cache(key: str) -> Path | None:
    try:
        from app import storage

        return storage.data_dir() / "cache" / "token_lengths" / f"{key}.json"
    except Exception:  # noqa: BLE001 - no data directory configured: the memory cache alone
        return None


def _load_disk(key: str) -> DatasetLengths | None:
    path = _disk_cache(key)
    if path is None or not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        rows = tuple(RowLength(total=t, prompt=p) for t, p in data["rows"])
        return DatasetLengths(rows, bool(data["counted"]), str(data["how"]), str(data["prompt_format"]), 0.0)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _store_disk(key: str, lengths: DatasetLengths) -> None:
    path = _disk_cache(key)
    if path is None:
        return
    from app.storage import atomic_write_bytes

    data = {"rows": [[r.total, r.prompt] for r in lengths.rows], "counted": lengths.counted, "how": lengths.how,
            "prompt_format": lengths.prompt_format}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, json.dumps(data).encode())
    except OSError:
        pass  # a cache that cannot be written costs a recount, nothing else


def dataset_lengths(path: Path, model: str | None, prompt_format: str | None = None,
                    bytes_per_token: float = 4.0) -> DatasetLengths:
    """The dataset's row lengths for `model` in `prompt_format` (None: the model's default, as a job's).

    Counted with the model's tokenizer when its folder is here; else estimated at `bytes_per_token`.
    Raises PromptFormatError when the format asked for cannot be used with this model."""
    folder = model_folder(model) if model else None
    tokenizer: FolderTokenizer | None = None
    if folder is not None:
        try:
            tokenizer = load_tokenizer(folder)
        except (TokenizerUnavailable, OSError, ValueError):
            tokenizer = None
    template = tokenizer.chat_template if tokenizer is not None else None
    fmt = resolve_format(prompt_format, template) if tokenizer is not None else (
        prompt_format if prompt_format in ("alpaca", "plain") else "alpaca")
    identity = _stamp(folder / "tokenizer.json") if tokenizer is not None and folder is not None else \
        f"estimate:{bytes_per_token}"
    key = hashlib.sha256(f"{CACHE_VERSION}|{_stamp(path)}|{identity}|{fmt}".encode()).hexdigest()[:32]
    with _lock:
        cached = _memory.get(key)
    if cached is not None:
        return cached
    found = _load_disk(key)
    if found is None:
        started = time.perf_counter()
        rows = _read_rows(path)
        if tokenizer is not None:
            rendered = _render(rows, fmt, template, tokenizer.special_tokens)
            how = f"counted with {model}'s tokenizer in the {fmt} prompt format"
            lengths = _count(tokenizer, rendered)
        else:
            rendered = _render(rows, fmt, None, {})
            why = "the model's tokenizer is not on this server" if model else "a pasted config.json has no tokenizer"
            how = (f"estimated, not counted: {why}, so each row's {fmt} text is taken at "
                   f"{bytes_per_token:g} bytes per token" + (" (a byte-level vocabulary)" if bytes_per_token == 1.0
                                                             else " (a rough English average for BPE vocabularies)"))
            lengths = _estimate(rendered, bytes_per_token)
        found = DatasetLengths(lengths, tokenizer is not None, how, fmt, time.perf_counter() - started)
        _store_disk(key, found)
    with _lock:
        if len(_memory) > 64:
            _memory.clear()
        _memory[key] = found
    return found
