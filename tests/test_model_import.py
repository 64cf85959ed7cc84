"""An admin imports a GGUF file from a path on the server; a real worker converts it (planning queue).

Through the JSON API (POST /api/v1/models/import, then its status) and the
Models page's endpoints (the form's POST and the fragment it polls), on the
session stack. The file is tests.helpers.tiny_gguf's loadable tiny Llama, so a
success costs little more than the worker's import of transformers. Each test
removes the model it made: the stack is shared. Each refusal reaches the page
through the same record field (`error`); the refusals themselves (unsafe name,
architecture, tensor type, truncated file) are tested on import_gguf in
tests/test_gguf_import.py.
"""
from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlmodel import Session

from app.auth.users import create_token, create_user
from tests.helpers.chaos_stack import engine_of
from tests.helpers.stack import Stack, wait_until
from tests.helpers.tiny_gguf import tiny_llama_gguf

pytestmark = pytest.mark.integration

pytest.importorskip("gguf", reason="GGUF import needs the `gguf` package")
IMPORT_TIMEOUT = 120


@pytest.fixture
def model_name(stack: Stack) -> Iterator[str]:
    name = f"tiny-{uuid.uuid4().hex[:8]}"
    yield name
    shutil.rmtree(stack.data_dir / "models" / name, ignore_errors=True)


@pytest.fixture
def user_token(stack: Stack) -> str:
    with Session(engine_of(stack)) as session:
        user = create_user(session, f"{uuid.uuid4().hex[:8]}@example.com", "a long enough password")
        return create_token(session, user, "import test")[1]


def _finished(client: httpx.Client, import_id: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        record = client.get(f"/api/v1/models/imports/{import_id}").json()
        return record if record["state"] in ("succeeded", "failed") else None

    return wait_until(done, IMPORT_TIMEOUT, f"import {import_id} did not finish", interval=0.5)


def test_an_imported_gguf_appears_in_the_model_list(stack: Stack, client: httpx.Client, tmp_path: Path,
                                                    model_name: str) -> None:
    source = tiny_llama_gguf(tmp_path)
    started = client.post("/api/v1/models/import", json={"path": str(source), "name": model_name})
    assert started.status_code == 202, started.text
    record = _finished(client, started.json()["id"])
    assert (record["state"], record["model_id"]) == ("succeeded", model_name), record
    assert any("dequantising to float32" in line for line in record["messages"])
    listed = {m["id"]: m for m in client.get("/api/v1/models").json()["data"]}
    assert listed[model_name]["description"] == "imported from Tiny-Llama.Q4_0.gguf, dequantised to float32"
    assert listed[model_name]["label"] == "Tiny Llama"


def test_a_corrupt_file_fails_with_its_reason_and_leaves_no_folder(stack: Stack, client: httpx.Client,
                                                                   tmp_path: Path, model_name: str) -> None:
    source = tmp_path / "broken.gguf"
    source.write_bytes(b"PK\x03\x04 this is a zip, not a model" * 10)
    record = _import(client, source, model_name)
    assert record["state"] == "failed"
    assert record["error"] == ("broken.gguf is not a GGUF file "
                               "(it starts with b'PK\\x03\\x04', a GGUF file with b'GGUF')")
    assert not (stack.data_dir / "models" / model_name).exists()


def test_a_missing_path_fails_naming_it(client: httpx.Client, tmp_path: Path) -> None:
    record = _import(client, tmp_path / "nope.gguf")
    assert (record["state"], record["error"]) == ("failed", f"{tmp_path / 'nope.gguf'}: no such file")


def _import(client: httpx.Client, path: Path, name: str | None = None) -> dict[str, Any]:
    return _finished(client, client.post("/api/v1/models/import", json={"path": str(path), "name": name}).json()["id"])


def test_an_existing_name_is_refused(stack: Stack, client: httpx.Client, tmp_path: Path, model_name: str) -> None:
    (stack.data_dir / "models" / model_name).mkdir()
    record = _import(client, tiny_llama_gguf(tmp_path), model_name)
    assert record["state"] == "failed" and f"a model named {model_name!r} already exists" in record["error"]


def test_a_relative_path_is_refused_before_anything_is_queued(client: httpx.Client) -> None:
    answer = client.post("/api/v1/models/import", json={"path": "models/x.gguf"})
    assert answer.status_code == 422, answer.text
    (problem,) = answer.json()["detail"]  # FastAPI's validation shape, as the schema says
    assert problem["loc"] == ["body", "path"] and "is not an absolute path" in problem["msg"]


def test_a_user_who_is_not_an_admin_gets_403(stack: Stack, user_token: str, tmp_path: Path) -> None:
    with stack.client(token=user_token) as user:
        assert user.post("/api/v1/models/import", json={"path": str(tmp_path / "x.gguf")}).status_code == 403
        assert user.post("/models/import", data={"path": str(tmp_path / "x.gguf")}).status_code == 403
        assert user.get("/api/v1/models/imports/imp_0").status_code == 403


def test_the_models_page_has_no_import_form_for_a_user_who_is_not_an_admin(stack: Stack, user_token: str) -> None:
    with stack.client(token=user_token) as user:
        page = user.get("/models")
    assert page.status_code == 200 and "<h1>Models</h1>" in page.text
    assert 'id="gguf-import-form"' not in page.text


def test_the_page_import_polls_until_done_then_swaps_in_the_model_rows(stack: Stack, client: httpx.Client,
                                                                       tmp_path: Path, model_name: str) -> None:
    source = tiny_llama_gguf(tmp_path)
    fragment = client.post("/models/import", data={"path": str(source), "name": model_name},
                           headers={"HX-Request": "true"})
    assert fragment.status_code == 200 and 'hx-trigger="every 1s"' in fragment.text
    import_id = fragment.text.split('id="import-', 1)[1].split('"', 1)[0]
    _finished(client, import_id)
    done = client.get(f"/models/imports/{import_id}", headers={"HX-Request": "true"}).text
    assert "hx-trigger" not in done.split("<template>")[0]  # stops polling
    assert 'hx-swap-oob="true"' in done and f'data-model="{model_name}"' in done
