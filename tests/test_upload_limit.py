"""An upload over the size limit says so (issue 17, acceptance 8), with the limit set to 1 MB for the test.

In the browser the page knows the limit: a file over it is refused before a byte is sent, with a message
naming the limit beside the upload box, and nothing is stored. A client that sends the whole body before
reading the answer (Python's urllib) gets the 413 rather than a broken pipe; `/v1/files` answers it in
OpenAI's shape."""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.helpers.stack import ADMIN_TOKEN, Stack, running_stack

pytestmark = pytest.mark.integration

LIMIT_MB = 1


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("upload-limit"), workers=(), build_demo=False,
                       env={"TUNEDECK_MAX_UPLOAD_MB": str(LIMIT_MB)}) as running:
        yield running


def _too_big(tmp_path: Path, times: int = 3) -> Path:
    row = json.dumps({"prompt": "x" * 200, "completion": "y"}) + "\n"
    path = tmp_path / "big.jsonl"
    path.write_text(row * (times * LIMIT_MB * 1024 * 1024 // len(row)), encoding="utf-8")
    return path


def _dataset_count(stack: Stack) -> int:
    with stack.client() as client:
        return int(client.get("/api/v1/datasets").json()["count"])


def test_a_file_over_the_limit_is_refused_in_the_page_before_sending(page: Any, stack: Stack, tmp_path: Path) -> None:
    before = _dataset_count(stack)
    sent: list[str] = []
    page.on("request", lambda r: sent.append(r.url) if "/datasets/upload" in r.url else None)
    page.goto("/jobs/new")
    page.locator("#upload-file").set_input_files(str(_too_big(tmp_path)))
    expect(page.locator("#upload-error")).to_contain_text(f"over the {LIMIT_MB} MB upload limit")
    page.locator("#upload-form button[type=submit]").click()
    expect(page.locator("#upload-error")).to_contain_text("upload limit")
    assert not sent and _dataset_count(stack) == before


@pytest.mark.parametrize(("path", "shape"), [("/api/v1/datasets", "detail"), ("/v1/files", "error")])
def test_a_client_sending_the_whole_body_reads_the_413(stack: Stack, tmp_path: Path, path: str, shape: str) -> None:
    body = _too_big(tmp_path, times=32).read_bytes()  # far more than socket buffers hold: a reset without draining
    boundary = "tunedeckboundary"
    payload = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nfine-tune\r\n"
               f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.jsonl\"\r\n"
               "Content-Type: application/jsonl\r\n\r\n").encode() + body + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(f"{stack.base_url}{path}", data=payload, method="POST", headers={
        "Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": f"multipart/form-data; boundary={boundary}"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=60)
    assert refused.value.code == 413
    answer = json.loads(refused.value.read())
    assert f"{LIMIT_MB} MB upload limit" in json.dumps(answer) and shape in answer
