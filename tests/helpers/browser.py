"""Headless Chromium for the page tests: Debian's chromium driven by Playwright, logged in as the
seeded admin, failing a test on any JavaScript error or server error the page met."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.helpers.stack import ADMIN_EMAIL, ADMIN_PASSWORD

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
TIMEOUT_MS = 180_000  # upper bound for anything that waits on training


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser: Browser, stack) -> Iterator[Page]:  # type: ignore[no-untyped-def]
    context = browser.new_context(base_url=stack.base_url, accept_downloads=True,
                                  viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(30_000)
    pg = context.new_page()
    js_errors: list[str] = []
    pg.on("pageerror", lambda exc: js_errors.append(str(exc)))
    pg.on("console", lambda msg: js_errors.append(msg.text)
          if msg.type == "error" and not msg.text.startswith("Failed to load resource: the server responded with a status of 4")
          else None)
    failed: list[str] = []
    pg.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 500 else None)
    pg.goto("/login")
    pg.get_by_label("Email").fill(ADMIN_EMAIL)
    pg.get_by_label("Password").fill(ADMIN_PASSWORD)
    pg.get_by_role("button", name="Log in").click()
    pg.wait_for_url("**/jobs")
    try:
        yield pg
    finally:
        context.close()
    assert not js_errors, f"JavaScript errors on the page: {js_errors}"
    assert not failed, f"server errors: {failed}"


def fill_job_form(page: Page, *, name: str = "", method: str = "lora", max_steps: str = "40",
                  batch_size: str = "8", seq_len: str = "128") -> None:
    """Open the new-job form and fill it for the demo model and dataset (not submitted)."""
    page.goto("/jobs/new")
    expect(page.get_by_role("heading", name="New fine-tuning job")).to_be_visible()
    if name:
        page.get_by_label("Name", exact=True).fill(name)
    page.get_by_label("Model", exact=True).select_option("demo")
    page.get_by_label("Dataset", exact=True).select_option("demo")
    page.get_by_label("Method", exact=True).select_option(method)
    # The method's options (and its default learning rate) swap in over htmx: fill after they have.
    expect(page.locator("#method.htmx-request")).to_have_count(0)
    expect(page.locator("#method-options legend")).to_contain_text("options")
    page.get_by_label("Max steps").fill(max_steps)
    page.get_by_label("Learning rate").fill("0.001")
    page.get_by_label("Batch size").fill(batch_size)
    page.get_by_label("Sequence length").fill(seq_len)
