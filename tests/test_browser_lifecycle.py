"""Issue 5 in a real headless Chromium: a job launched from the form with a held-out split,
samples and checkpoints shows evaluation loss and exact match on its chart (and the final exact match in
its summary), samples, checkpoints (one downloaded)
and a timeline, all without a reload; the workers page lists the worker."""
from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.helpers.browser import TIMEOUT_MS, fill_job_form

pytestmark = pytest.mark.browser

STEPS = 20
EVERY = 5


def _launch_with_evaluation(page: Page) -> None:
    fill_job_form(page, name="browser-lifecycle", max_steps=str(STEPS), batch_size="4")
    page.get_by_label("Checkpoint every").fill(str(EVERY))
    page.get_by_label("Eval fraction").fill("0.1")
    page.get_by_label("Eval every").fill(str(EVERY))
    page.get_by_label("Sample every").fill(str(EVERY))
    page.get_by_role("button", name="Launch").click()
    page.wait_for_url(re.compile(r"/jobs/[0-9a-f]+$"))


def test_evaluation_samples_checkpoints_and_timeline_arrive_live(page: Page, tmp_path: Path) -> None:
    _launch_with_evaluation(page)
    page.evaluate("window.__marker = 1")  # survives only without a reload

    expect(page.locator("#status .badge")).to_have_attribute("data-status", "succeeded", timeout=TIMEOUT_MS)
    loss_chart = page.locator('[aria-label="Loss chart"]')
    expect(loss_chart).to_have_attribute("data-points", str(STEPS), timeout=30_000)
    # Evaluation every 5 steps of 20 (and at the end, which is step 20): 4 points.
    expect(loss_chart).to_have_attribute("data-count-eval_loss", str(STEPS // EVERY))
    expect(loss_chart).to_have_attribute("data-count-eval_exact_match", str(STEPS // EVERY))  # same points, % axis
    expect(page.locator("#summary #eval-exact-match")).to_have_text(re.compile(r"^\d{1,3}\.\d%$"), timeout=30_000)
    expect(page.locator('[aria-label="Memory chart"]')).to_have_attribute("data-count-memory_mb", str(STEPS))

    samples = page.locator("#samples article.sample")
    expect(samples.first).to_be_visible()
    assert samples.count() >= STEPS // EVERY
    expect(samples.first.locator("header")).to_contain_text(f"step {STEPS}")  # newest first

    timeline = page.locator("#timeline")
    expect(timeline).to_contain_text(f"checkpoint saved at step {EVERY}")
    expect(timeline).to_contain_text("started on")

    links = page.locator("#checkpoints a")
    expect(links.first).to_be_visible(timeout=30_000)
    assert links.count() == 3  # keep_checkpoints defaults to 3: steps 10, 15, 20
    assert page.evaluate("window.__marker") == 1, "the page was reloaded"

    with page.expect_download(timeout=60_000) as info:
        links.first.click()
    target = tmp_path / (info.value.suggested_filename or "checkpoint.zip")
    info.value.save_as(target)
    with zipfile.ZipFile(io.BytesIO(target.read_bytes())) as zf:
        names = {Path(n).name for n in zf.namelist()}
    assert "state.json" in names, names
    assert "adapter_model.safetensors" in names, names


def test_the_workers_page_shows_host_accelerator_queues_and_state(page: Page) -> None:
    page.goto("/workers")
    expect(page.get_by_role("heading", name="Workers")).to_be_visible()
    row = page.locator("#workers tbody tr").first
    expect(row).to_contain_text("CPU")
    expect(row).to_contain_text("cpu, planning")
    expect(row.locator("td").nth(5)).to_have_text(re.compile(r"idle|step \d+ / \d+"))
