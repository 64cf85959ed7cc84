"""Hostile and broken input: oversized uploads, path tricks on downloads. Nothing is left behind."""
from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import httpx
import pytest

from tests.helpers.api import dataset_files, job_body, read_events

pytestmark = pytest.mark.integration


def _chunks(total_mb: int) -> Iterator[bytes]:
    line = b'{"text": "' + b"x" * 1000 + b'"}\n'
    block = line * 1000  # ~1 MB, built once; nothing near total_mb is allocated
    for _ in range(total_mb):
        yield block


def test_an_upload_past_the_limit_is_refused_while_streaming(stack, client: httpx.Client) -> None:
    before = dataset_files(stack.data_dir)
    boundary = "tunedeckboundary"

    def body() -> Iterator[bytes]:
        yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.jsonl\"\r\n"
               "Content-Type: application/octet-stream\r\n\r\n").encode()
        yield from _chunks(300)  # more than the 200 MB default
        yield f"\r\n--{boundary}--\r\n".encode()

    response = client.post("/api/v1/datasets", content=body(),
                           headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}, timeout=120)
    assert response.status_code == 413
    assert "upload limit" in response.json()["detail"]
    assert dataset_files(stack.data_dir) == before


def test_a_declared_length_past_the_limit_is_refused_before_reading(stack) -> None:
    from tests.helpers.stack import ADMIN_TOKEN

    request = (f"POST /api/v1/datasets HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n"
               "Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 1000000000000\r\n\r\nx").encode()
    with socket.create_connection(("127.0.0.1", stack.api_port), timeout=10) as sock:
        sock.sendall(request)
        status_line = sock.recv(4096).split(b"\r\n", 1)[0]
    assert status_line.startswith(b"HTTP/1.1 413")


@pytest.fixture(scope="module")
def finished_job(stack) -> str:
    with stack.client() as client:
        job = client.post("/api/v1/jobs", json=job_body(hyperparameters={"max_steps": 2})).json()
        read_events(client, job["id"])
        assert client.get(f"/api/v1/jobs/{job['id']}").json()["status"] == "succeeded"
        return job["id"]


@pytest.mark.parametrize("suffix", [
    "/adapter/../../../etc/passwd", "/adapter%2f..%2f..%2fetc%2fpasswd", "/..%2f..%2fetc%2fpasswd",
    "/%2e%2e/%2e%2e/etc/passwd", "/adapter/..%252f..%252fetc", "/checkpoints/..%2f..%2fspec.json",
    "/checkpoints/%2fetc%2fpasswd", "/checkpoints/checkpoint-1%2f..%2f..", "\\..\\..\\etc\\passwd",
])
def test_path_tricks_on_downloads_get_404(client: httpx.Client, finished_job: str, suffix: str) -> None:
    response = client.get(f"/api/v1/jobs/{finished_job}{suffix}")
    assert response.status_code in (404, 422), response.status_code
    assert b"root:" not in response.content


def test_a_symlink_planted_in_the_artifact_is_not_served(stack, client: httpx.Client, finished_job: str, tmp_path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP SECRET")
    artifact = stack.data_dir / "jobs" / finished_job / "artifact"
    os.symlink(secret, artifact / "leak.txt")
    (artifact.parent / "adapter.zip").unlink(missing_ok=True)
    response = client.get(f"/api/v1/jobs/{finished_job}/adapter")
    assert response.status_code == 200
    assert b"TOP SECRET" not in response.content
