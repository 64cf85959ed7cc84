"""Walking-skeleton acceptance in a real headless Chromium.

Open the form, launch a job, see the log grow and the loss chart gain points
without a reload, then download the adapter. Also: per-field form errors,
line-numbered upload errors and the jobs list.
"""
from __future__ import annotations

import io
import re
import time
import zipfile
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.helpers.browser import TIMEOUT_MS, fill_job_form
from tests.helpers.api import job_body

pytestmark = pytest.mark.browser

STACK_TRACE = re.compile(r"Traceback|File \"|\.py\", line|Internal Server Error")


def _log_lines(page: Page) -> int:
    return page.get_by_role("log").locator(".log-line").count()


def _chart_points(page: Page) -> int:
    return int(page.locator('[aria-label="Loss chart"]').get_attribute("data-points") or 0)


def _wait_for(predicate, timeout: float, message: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(message)


def test_launch_watch_live_and_download_the_adapter(page: Page, tmp_path: Path) -> None:
    fill_job_form(page, name="browser-walking-skeleton")
    page.get_by_role("button", name="Launch").click()
    page.wait_for_url(re.compile(r"/jobs/[^/]+$"))
    job_id = page.url.rstrip("/").rsplit("/", 1)[-1]
    assert job_id not in ("new", "jobs")
    expect(page.get_by_role("heading", name="browser-walking-skeleton")).to_be_visible()

    # From here on nothing may navigate: this marker only survives without a reload.
    page.evaluate("window.__marker = 1")
    navigations: list[str] = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url) if frame == page.main_frame else None)

    chart = page.locator('[aria-label="Loss chart"]')
    log = page.get_by_role("log")
    expect(chart.locator("canvas")).to_have_count(1)  # uPlot drew its canvas

    # The log grows between two moments.
    first = _wait_for(lambda: _log_lines(page), TIMEOUT_MS / 1000, "no log line arrived")
    _wait_for(lambda: _log_lines(page) > first, TIMEOUT_MS / 1000,
              f"the log did not grow past {first} lines")

    # The chart gains points between two moments.
    points = _wait_for(lambda: _chart_points(page), TIMEOUT_MS / 1000, "the chart got no point")
    _wait_for(lambda: _chart_points(page) > points, TIMEOUT_MS / 1000,
              f"the chart did not grow past {points} points")

    # Status badge goes to succeeded, swapped in by SSE.
    badge = page.locator("#status .badge")
    expect(badge).to_have_attribute("data-status", "succeeded", timeout=TIMEOUT_MS)
    expect(badge).to_have_text("succeeded")

    # Every step is on the chart, once, and the progress bar is full.
    expect(chart).to_have_attribute("data-points", "40", timeout=30_000)
    expect(page.locator("#progress")).to_contain_text("step 40 / 40")
    expect(chart.locator("canvas")).to_have_count(1)
    assert _log_lines(page) > first
    expect(log).to_contain_text(re.compile(r"\b40\s*/\s*40\b"))
    # The log follows its newest line while the reader stays at the end.
    assert log.evaluate("el => el.scrollHeight - el.scrollTop - el.clientHeight") < 24

    # The adapter link appears without a reload (the summary is re-fetched on the end event).
    link = page.get_by_role("link", name="Download adapter")
    expect(link).to_be_visible(timeout=30_000)
    expect(page.get_by_role("button", name="Cancel")).to_have_count(0)

    assert page.evaluate("window.__marker") == 1, "the page was reloaded"
    assert navigations == [], f"the page navigated: {navigations}"

    page.screenshot(path="/tmp/job_page.png", full_page=True)

    with page.expect_download(timeout=60_000) as info:
        link.click()
    download = info.value
    target = tmp_path / (download.suggested_filename or "adapter.zip")
    download.save_as(target)
    assert target.suffix == ".zip", download.suggested_filename
    with zipfile.ZipFile(io.BytesIO(target.read_bytes())) as zf:
        names = {Path(n).name for n in zf.namelist()}
        assert {"adapter_config.json", "adapter_model.safetensors"} <= names, names
    assert page.evaluate("window.__marker") == 1


def test_an_invalid_value_shows_a_field_error_not_a_stack_trace(page: Page) -> None:
    fill_job_form(page, seq_len="100000")
    page.get_by_role("button", name="Launch").click()
    page.wait_for_load_state()
    assert page.url.endswith("/jobs"), page.url  # the form came back, no job page
    error = page.locator("#seq_len-error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("seq_len")
    expect(error).to_contain_text("512")
    expect(page.get_by_text("Please fix the fields marked below.")).to_be_visible()
    # What the user typed is kept, and the field points at its error.
    seq_len = page.get_by_label("Sequence length")
    expect(seq_len).to_have_value("100000")
    expect(seq_len).to_have_attribute("aria-invalid", "true")
    expect(seq_len).to_have_attribute("aria-describedby", "seq_len-error")
    # Nothing was uploaded, so nothing claims it was.
    expect(page.get_by_text("Uploaded and selected")).to_have_count(0)
    assert not STACK_TRACE.search(page.content())


def test_a_malformed_jsonl_upload_shows_line_numbered_errors(page: Page) -> None:
    page.goto("/jobs/new")
    page.evaluate("window.__marker = 1")
    malformed = b'{"instruction": "a", "output": "b"}\n{not json\n{"instruction": "c"}\n'
    page.get_by_label("Upload training data").set_input_files(
        files=[{"name": "broken.jsonl", "mimeType": "application/jsonl", "buffer": malformed}])
    page.get_by_role("button", name="Upload", exact=True).click()
    alert = page.locator("#dataset-field [role=alert]")
    expect(alert).to_be_visible()
    expect(alert).to_contain_text("line 2")
    assert not STACK_TRACE.search(alert.inner_text())
    # The swap kept the page and the Dataset control, and the broken file is not offered.
    assert page.evaluate("window.__marker") == 1
    dataset = page.get_by_label("Dataset", exact=True)
    expect(dataset).to_be_visible()
    assert "broken" not in dataset.inner_text()


def test_a_good_upload_is_selected_in_the_dataset_control(page: Page, stack) -> None:  # type: ignore[no-untyped-def]
    rows = (stack.data_dir / "datasets" / "demo.jsonl").read_text().splitlines()[:50]
    page.goto("/jobs/new")
    page.get_by_label("Upload training data").set_input_files(
        files=[{"name": "fifty.jsonl", "mimeType": "application/jsonl", "buffer": ("\n".join(rows) + "\n").encode()}])
    page.get_by_role("button", name="Upload", exact=True).click()
    expect(page.locator("#dataset-field [role=status]")).to_contain_text("Uploaded")
    selected = page.get_by_label("Dataset", exact=True).locator("option:checked")
    expect(selected).to_contain_text("fifty")
    expect(selected).to_contain_text("50 rows")


def _submit(stack, name: str, max_steps: int) -> str:  # type: ignore[no-untyped-def]
    """A job submitted through the API, as another client of the same user would."""
    with stack.client() as client:
        created = client.post("/api/v1/jobs", json=job_body(name=name, hyperparameters={"max_steps": max_steps}))
        assert created.status_code == 201, created.text
        return str(created.json()["id"])


def test_the_jobs_list_shows_the_job_with_its_status_badge(page: Page, stack) -> None:  # type: ignore[no-untyped-def]
    job_id = _submit(stack, "browser-list-job", max_steps=3)

    page.goto("/jobs")
    page.evaluate("window.__marker = 1")
    row = page.get_by_role("row").filter(has=page.get_by_role("link", name="browser-list-job"))
    expect(row).to_have_count(1)
    badge = row.locator(".badge")
    expect(badge).to_have_count(1)
    expect(badge).to_have_attribute("data-status", re.compile(r"^(queued|running|succeeded)$"))
    expect(row.get_by_role("link", name="browser-list-job")).to_have_attribute("href", f"/jobs/{job_id}")
    # While it is active the table refreshes itself; the badge reaches succeeded without a reload.
    expect(badge).to_have_attribute("data-status", "succeeded", timeout=TIMEOUT_MS)
    expect(badge).to_have_text("succeeded")
    assert page.evaluate("window.__marker") == 1
    # The earlier browser job is listed too, as succeeded.
    earlier = page.get_by_role("row").filter(has=page.get_by_role("link", name="browser-walking-skeleton"))
    if earlier.count():
        expect(earlier.locator(".badge")).to_have_attribute("data-status", "succeeded")


def test_cancel_from_the_job_page_swaps_the_status_and_hides_the_button(page: Page, stack) -> None:  # type: ignore[no-untyped-def]
    job_id = _submit(stack, "browser-cancel-job", max_steps=5000)

    page.goto(f"/jobs/{job_id}")
    page.evaluate("window.__marker = 1")
    badge = page.locator("#status .badge")
    expect(badge).to_have_attribute("data-status", "running", timeout=TIMEOUT_MS)
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Cancel").click()
    expect(badge).to_have_attribute("data-status", re.compile(r"^(cancelling|cancelled)$"))
    expect(page.get_by_role("button", name="Cancel")).to_have_count(0)
    expect(badge).to_have_attribute("data-status", "cancelled", timeout=TIMEOUT_MS)
    expect(page.get_by_role("button", name="Cancel")).to_have_count(0)
    expect(page.get_by_role("link", name="Download adapter")).to_have_count(0)
    assert page.evaluate("window.__marker") == 1
