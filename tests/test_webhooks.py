"""Webhooks (issue 16, acceptance 5): a receiver gets exactly one signed delivery per job that ends, also
when the API was down between the job's end and the delivery; failed answers are retried; loopback and
link-local targets are refused unless an admin allows them. Real Redis, worker, trainer and API; the
receiver is a plain HTTP server in the test, which checks the signature with its own HMAC code."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from app.embedded_redis import free_port
from tests.helpers.api import job_body
from tests.helpers.stack import Stack, make_stack, wait_until

pytestmark = pytest.mark.integration


class Receiver:
    """Records every POST; answers `fail_first` of them with 500 first."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.fail_first = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                body = self.rfile.read(int(self.headers["content-length"]))
                receiver.received.append({"headers": {k.lower(): v for k, v in self.headers.items()}, "body": body})
                failing = receiver.fail_first > 0
                receiver.fail_first -= failing
                self.send_response(500 if failing else 200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return

        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def for_job(self, job_id: str) -> list[dict[str, Any]]:
        return [r for r in self.received if json.loads(r["body"])["data"]["id"] == job_id]


@pytest.fixture(scope="module")
def hooked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, Receiver]]:
    stack = make_stack(tmp_path_factory.mktemp("webhooks"))
    stack.env["TUNEDECK_WEBHOOK_RETRY_SECONDS"] = "0.5"
    receiver = Receiver()
    try:
        stack.start_redis()
        stack.run_cli("migrate")
        stack.run_cli("init-demo")
        stack.start_worker()
        stack.start_api()
        stack.wait_for_workers(1)
        yield stack, receiver
    finally:
        stack.stop_all()
        receiver.server.shutdown()


def _register(client: httpx.Client, url: str, **extra: Any) -> dict[str, Any]:
    response = client.post("/api/v1/webhooks", json={"url": url, **extra})
    assert response.status_code == 201, response.text
    return response.json()


def _verified(delivery: dict[str, Any], secret: str) -> bool:
    """Standard Webhooks, written out: HMAC-SHA256 over "id.timestamp.body" with the secret's key bytes."""
    headers = delivery["headers"]
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + delivery["body"]
    expected = "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return expected in headers["webhook-signature"].split() and abs(time.time() - int(headers["webhook-timestamp"])) < 300


def _run(client: httpx.Client, steps: int = 3) -> str:
    created = client.post("/api/v1/jobs", json=job_body(hyperparameters={"max_steps": steps}))
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


def test_each_ended_job_gets_exactly_one_signed_delivery(hooked: tuple[Stack, Receiver]) -> None:
    stack, receiver = hooked
    with stack.client() as client:
        endpoint = _register(client, receiver.url, allow_local=True)
        job_id = _run(client)
        wait_until(lambda: receiver.for_job(job_id), 120, "no delivery for the job")
        time.sleep(2)  # nothing more comes
        deliveries = receiver.for_job(job_id)
        assert len(deliveries) == 1
        event = json.loads(deliveries[0]["body"])
        assert event["type"] == "fine_tuning.job.succeeded" and event["object"] == "event"
        assert event["tunedeck"]["fine_tuned_model"] == f"ft:demo:{job_id}"
        assert _verified(deliveries[0], endpoint["secret"])
        assert not _verified(deliveries[0], "whsec_" + base64.b64encode(b"x" * 24).decode())
        listed = client.get(f"/api/v1/webhooks/{endpoint['id']}/deliveries").json()["data"]
        assert [(d["job_id"], d["status"], d["attempts"]) for d in listed] == [(job_id, "delivered", 1)]

        queued = _run(client, steps=500)  # the worker is free: cancel it whatever state it reached
        assert client.post(f"/api/v1/jobs/{queued}/cancel").status_code == 200
        wait_until(lambda: receiver.for_job(queued), 60, "no delivery for the cancelled job")
        assert json.loads(receiver.for_job(queued)[0]["body"])["type"] == "fine_tuning.job.cancelled"
        client.delete(f"/api/v1/webhooks/{endpoint['id']}")


def test_a_delivery_due_while_the_api_was_down_is_sent_once_after_it_restarts(hooked: tuple[Stack, Receiver]) -> None:
    stack, receiver = hooked
    with stack.client() as client:
        endpoint = _register(client, receiver.url, allow_local=True)
        job_id = _run(client, steps=30)
    stack.stop("api")
    db = sqlite3.connect(stack.data_dir / "tunedeck.db")
    try:
        wait_until(lambda: db.execute("SELECT status FROM job WHERE id = ?", (job_id,)).fetchone()[0] == "succeeded",
                   180, "the job did not finish while the API was down")
        assert db.execute("SELECT status FROM webhook_delivery WHERE job_id = ?", (job_id,)).fetchall() == [("pending",)]
    finally:
        db.close()
    assert not receiver.for_job(job_id)
    stack.start_api()
    wait_until(lambda: receiver.for_job(job_id), 30, "the delivery was not sent after the restart")
    time.sleep(2)
    assert len(receiver.for_job(job_id)) == 1 and _verified(receiver.for_job(job_id)[0], endpoint["secret"])
    with stack.client() as client:
        client.delete(f"/api/v1/webhooks/{endpoint['id']}")


def test_a_failed_answer_is_retried_with_the_same_message_id(hooked: tuple[Stack, Receiver]) -> None:
    stack, receiver = hooked
    receiver.fail_first = 2
    with stack.client() as client:
        endpoint = _register(client, receiver.url, allow_local=True)
        job_id = _run(client)
        wait_until(lambda: len(receiver.for_job(job_id)) >= 3, 90, "not retried")
        attempts = receiver.for_job(job_id)
        assert len({a["headers"]["webhook-id"] for a in attempts}) == 1
        listed = wait_until(lambda: [d for d in client.get(f"/api/v1/webhooks/{endpoint['id']}/deliveries").json()[
            "data"] if d["status"] == "delivered"], 10, "not marked delivered")
        assert listed[0]["attempts"] == 3 and listed[0]["last_status_code"] == 200
        page = client.get("/settings")
        assert f'data-endpoint="{endpoint["id"]}"' in page.text and 'data-status="delivered"' in page.text
        client.delete(f"/api/v1/webhooks/{endpoint['id']}")


@pytest.mark.parametrize(("url", "extra", "field"), [
    ("ftp://example.com/hook", {}, "url"),
    ("http://127.0.0.1:9/hook", {}, "url"),
    ("http://localhost:9/hook", {}, "url"),
    ("http://169.254.169.254/latest/meta-data", {}, "url"),
    ("http://[::1]:9/hook", {}, "url"),
    ("http://127.0.0.1:9/hook", {"events": ["fine_tuning.job.exploded"]}, "events"),
])
def test_a_target_deliveries_may_not_go_to_is_refused_by_field(hooked: tuple[Stack, Receiver], url: str,
                                                               extra: dict[str, Any], field: str) -> None:
    stack, _ = hooked
    with stack.client() as client:
        response = client.post("/api/v1/webhooks", json={"url": url, **extra})
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["body", field], response.text


def test_only_an_admin_may_allow_local_targets(hooked: tuple[Stack, Receiver]) -> None:
    import subprocess
    import sys

    from tests.helpers.stack import ROOT

    stack, receiver = hooked
    stack.run_cli("create-user", "--email", "hook-user@example.com", "--password", "password of hook user")
    token = subprocess.run([sys.executable, "-m", "app.cli", "create-token", "--email", "hook-user@example.com"],
                           env=stack.env, cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()[-1]
    with stack.client(token=token) as user:
        refused = user.post("/api/v1/webhooks", json={"url": receiver.url, "allow_local": True})
        assert refused.status_code == 422 and refused.json()["detail"][0]["loc"] == ["body", "allow_local"]
        assert user.get("/api/v1/webhooks").json()["count"] == 0
