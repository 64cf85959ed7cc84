"""An admin imports a GGUF file from the Models page in a real browser: progress, then the model in the list."""
from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.helpers.stack import Stack
from tests.helpers.tiny_gguf import tiny_llama_gguf

pytestmark = [pytest.mark.integration, pytest.mark.browser]

pytest.importorskip("gguf", reason="GGUF import needs the `gguf` package")
IMPORT_TIMEOUT_MS = 120_000


def _submit(page: Page, path: Path, name: str = "") -> None:
    page.goto("/models")
    page.get_by_label("Path on the server").fill(str(path))
    page.get_by_label("Name (optional)").fill(name)
    page.get_by_role("button", name="Import").click()


def test_an_import_from_the_models_page_shows_progress_then_lists_the_model(page: Page, stack: Stack,
                                                                            tmp_path: Path) -> None:
    name = f"tiny-{uuid.uuid4().hex[:8]}"
    try:
        _submit(page, tiny_llama_gguf(tmp_path), name)
        result = page.locator("#model-imports .model-import").first
        expect(result).to_have_attribute("data-state", "succeeded", timeout=IMPORT_TIMEOUT_MS)
        expect(result).to_contain_text(f"imported as {name}")
        expect(result.locator(".import-log")).to_contain_text("dequantising to float32")
        row = page.locator(f'#model-rows tr[data-model="{name}"]')
        expect(row).to_contain_text("imported from Tiny-Llama.Q4_0.gguf, dequantised to float32")
    finally:
        shutil.rmtree(stack.data_dir / "models" / name, ignore_errors=True)


def test_a_corrupt_file_imported_from_the_page_shows_the_error(page: Page, tmp_path: Path) -> None:
    source = tmp_path / "notes.gguf"
    source.write_text("just some text, not a model\n")
    _submit(page, source)
    result = page.locator("#model-imports .model-import").first
    expect(result).to_have_attribute("data-state", "failed", timeout=IMPORT_TIMEOUT_MS)
    expect(result.get_by_role("alert")).to_contain_text("notes.gguf is not a GGUF file")


def test_a_relative_path_is_refused_on_the_page(page: Page) -> None:
    _submit(page, Path("models/x.gguf"))
    refused = page.locator("#model-imports .model-import").first
    expect(refused.get_by_role("alert")).to_contain_text("'models/x.gguf' is not an absolute path")
