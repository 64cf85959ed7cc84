"""Source files and functions stay small enough to read in one sitting.

No .py file under app/ or worker/ is over 300 lines, worker/train/loop.py (the
step loop) is under 200, and no function in worker/train/ is over 80 lines
(from its `def` line, decorators excluded, to its last line).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]
MAX_FILE_LINES = 300
MAX_LOOP_LINES = 199  # "under 200"
MAX_FUNCTION_LINES = 80


def _lines(path: Path) -> int:
    return len(path.read_text(encoding="utf-8").splitlines())


def _sources(*folders: str) -> list[Path]:
    return sorted(path for folder in folders for path in (ROOT / folder).rglob("*.py"))


def test_no_source_file_of_app_or_worker_is_over_300_lines() -> None:
    sources = _sources("app", "worker")
    assert len(sources) > 50
    long = [f"{path.relative_to(ROOT)}: {n} lines" for path in sources if (n := _lines(path)) > MAX_FILE_LINES]
    assert not long, f"over {MAX_FILE_LINES} lines:\n" + "\n".join(long)


def test_the_training_loop_is_under_200_lines() -> None:
    loop = ROOT / "worker" / "train" / "loop.py"
    assert _lines(loop) <= MAX_LOOP_LINES, f"{loop.relative_to(ROOT)} has {_lines(loop)} lines"


def test_no_function_in_worker_train_is_over_80_lines() -> None:
    sources = _sources("worker/train")
    assert sources
    long = []
    for path in sources:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1  # type: ignore[operator]
                if length > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {length} lines")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(long)
