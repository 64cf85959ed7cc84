"""The demo model and dataset on disk, built once per test session."""
from __future__ import annotations

from pathlib import Path

import pytest


def shared_assets(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The demo model and dataset on disk, built once per test session; the trainers' tests read them."""
    from app.demo_dataset import write_demo_dataset
    from worker.demo_model import ensure_demo_model  # torch: imported only when a test needs the model

    root = tmp_path_factory.getbasetemp() / "shared-assets"
    dataset = root / "demo.jsonl"
    if not dataset.is_file():
        root.mkdir(parents=True, exist_ok=True)
        write_demo_dataset(dataset)
    return ensure_demo_model(root / "models"), dataset
