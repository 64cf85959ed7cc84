"""The job page's buttons (issue 17, acceptance 3): Cancel, Retry, Retry from scratch and Clone in headless
Chromium, with the job's state read back from the API after each (the same rules as the API's routes)."""
from __future__ import annotations

from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.helpers.api import job_body
from tests.helpers.stack import wait_until

pytestmark = pytest.mark.browser


def _job(client: httpx.Client, job_id: str) -> dict[str, Any]:
    return client.get(f"/api/v1/jobs/{job_id}").json()


def _statuses(client: httpx.Client, job_id: str) -> list[dict[str, Any]]:
    from tests.helpers.api import read_events

    return [e["data"] for e in read_events(client, job_id, timeout=30) if e["event"] == "status"]


def test_cancel_retry_retry_from_scratch_and_clone_on_the_job_page(page: Page, client: httpx.Client) -> None:
    page.on("dialog", lambda dialog: dialog.accept())
    body = job_body(name="buttons", hyperparameters={"max_steps": 3000, "checkpoint_every": 0})
    job_id = client.post("/api/v1/jobs", json=body).json()["id"]
    wait_until(lambda: _job(client, job_id)["progress"]["step"] >= 2, 180, "the job never got going")
    page.goto(f"/jobs/{job_id}")

    page.locator("#cancel-job").click()
    wait_until(lambda: _job(client, job_id)["status"] == "cancelled", 30, "Cancel did not cancel")
    expect(page.locator("#retry-job")).to_be_visible()  # the buttons follow the state, live
    stopped_at = _job(client, job_id)["progress"]["step"]

    page.locator("#retry-job").click()
    wait_until(lambda: _job(client, job_id)["status"] == "running" and _job(client, job_id)["progress"]["step"]
               > stopped_at, 120, "Retry did not resume")
    expect(page.locator("#cancel-job")).to_be_visible()
    page.locator("#cancel-job").click()
    wait_until(lambda: _job(client, job_id)["status"] == "cancelled", 30, "the second Cancel did not cancel")

    expect(page.locator("#retry-fresh-job")).to_be_visible()
    page.locator("#retry-fresh-job").click()
    wait_until(lambda: _job(client, job_id)["status"] == "running", 120, "Retry from scratch did not start")
    client.post(f"/api/v1/jobs/{job_id}/cancel")
    wait_until(lambda: _job(client, job_id)["status"] == "cancelled", 30, "the job did not stop")
    retries = [s for s in _statuses(client, job_id) if s.get("retry")]  # the stream has ended: all of them
    assert retries == [{"status": "queued", "retry": True, "resume": True},
                       {"status": "queued", "retry": True, "resume": False}]

    page.reload()
    page.locator("#clone-job").click()
    page.wait_for_url("**/jobs/new?*")
    expect(page.get_by_label("Name", exact=True)).to_have_value("buttons (copy)")
    expect(page.get_by_label("Max steps")).to_have_value("3000")
    expect(page.get_by_label("Method", exact=True)).to_have_value("lora")
    expect(page.locator("input[name=r]")).to_have_value("8")
    before = client.get("/api/v1/jobs").json()["count"]
    assert client.get("/api/v1/jobs").json()["count"] == before  # cloning creates nothing until Launch
