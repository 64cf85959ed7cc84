"""The built-in demo dataset: short string transformations in Alpaca format.

No model hub is reachable on the development machines, so Tunedeck ships a
dataset that the random-init demo model can visibly learn within a few dozen
steps: the answers are character-level rewrites of the input (uppercase,
reversed letters, the word said twice), so even a byte-level model with no
knowledge of English can lower its loss quickly.

Rows are built by arithmetic over a fixed word list rather than with
`random`, whose algorithms may change between Python versions: the file must
be byte-identical on every machine and every call, so its content hash is a
stable identity. This module stays pure Python so the web app can import it
without torch.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from app.storage import atomic_write_bytes

DEMO_DATASET_ID = "demo"
DEMO_DATASET_NAME = "Demo: string transformations"
DEMO_DATASET_ROWS = 400

WORDS: tuple[str, ...] = (
    "apple", "river", "stone", "cloud", "tiger", "green", "light", "house",
    "bread", "chair", "dance", "eagle", "flame", "grape", "heart", "island",
    "jelly", "knife", "lemon", "mango", "night", "ocean", "piano", "queen",
    "robot", "sugar", "table", "uncle", "voice", "water", "yacht", "zebra",
    "amber", "brick", "candy", "delta", "earth", "frost", "ghost", "honey",
    "ivory", "juice", "koala", "lunar", "maple", "noble", "olive", "pearl",
    "quilt", "radio", "solar", "tulip", "urban", "vivid", "wheat", "young",
    "hello", "world", "music", "paper", "smile", "train", "plant", "storm",
)

# (instruction, transformation). Inputs alternate between one and two words
# so that the 400 rows are nearly all distinct while staying short.
TASKS: tuple[tuple[str, Callable[[str], str]], ...] = (
    ("Convert to uppercase.", str.upper),
    ("Reverse the letters.", lambda text: text[::-1]),
    ("Repeat the text twice.", lambda text: f"{text} {text}"),
)


def demo_rows(count: int = DEMO_DATASET_ROWS) -> list[dict[str, str]]:
    """Build the rows; strides coprime with len(WORDS) spread the word choices."""
    rows: list[dict[str, str]] = []
    n = len(WORDS)
    for i in range(count):
        instruction, transform = TASKS[i % len(TASKS)]
        n_words = 1 + (i // len(TASKS)) % 2
        text = " ".join(WORDS[(i * 7 + k * 13 + i // n) % n] for k in range(n_words))
        rows.append({"instruction": instruction, "input": text, "output": transform(text)})
    return rows


def write_rows(path: Path, rows: list[dict[str, str]]) -> int:
    """Write rows as JSONL atomically so a reader never sees half a file; return the row count."""
    payload = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode("utf-8")
    # World-readable: the worker may run as another user.
    atomic_write_bytes(path, payload, permissions=0o644)
    return len(rows)


def write_demo_dataset(path: Path) -> int:
    return write_rows(path, demo_rows())
