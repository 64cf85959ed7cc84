"""The plan page in a real headless Chromium: the table follows the inputs without a reload, Launch fills the job form."""
from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.stack import ADMIN_EMAIL, ADMIN_PASSWORD

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM,
                              args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser: Browser, stack) -> Iterator[Page]:  # type: ignore[no-untyped-def]
    context = browser.new_context(base_url=stack.base_url, viewport={"width": 1400, "height": 1000})
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


def _peak(page: Page, method: str) -> int:
    return int(page.locator(f'tr[data-method="{method}"] .peak').get_attribute("data-bytes") or 0)


def test_changing_seq_len_updates_the_table_without_a_reload(page: Page) -> None:
    page.goto("/plan")
    expect(page.locator("#plan-results tbody tr")).to_have_count(9)
    page.evaluate("window.__planMarker = 'same document'")  # gone if the page navigates
    navigations: list[str] = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url) if frame == page.main_frame else None)
    before = _peak(page, "lora")
    flops_before = page.locator('tr[data-method="lora"] td[data-flops]').get_attribute("data-flops")
    with page.expect_response(lambda r: r.url.endswith("/plan/table") and r.status == 200):
        page.get_by_label("Sequence length").fill("4096")
        page.get_by_label("Sequence length").dispatch_event("change")
    expect(page.locator('tr[data-method="lora"] .peak')).not_to_have_attribute("data-bytes", str(before))
    assert _peak(page, "lora") > before  # twice the tokens: more activations and logits
    assert page.locator('tr[data-method="lora"] td[data-flops]').get_attribute("data-flops") != flops_before
    assert page.evaluate("window.__planMarker") == "same document" and navigations == []
    expect(page.locator(".badge-cheapest")).to_have_count(1)
    page.get_by_label("Sequence length").fill("99999999")  # above the model's positions: the field is named
    page.get_by_label("Sequence length").dispatch_event("change")
    expect(page.locator('#plan-errors li[data-field="seq_len"]')).to_be_visible()
    assert page.evaluate("window.__planMarker") == "same document"


def test_launch_from_a_row_opens_a_filled_job_form(page: Page) -> None:
    page.goto("/plan")
    with page.expect_response(lambda r: r.url.endswith("/plan/table")):
        page.get_by_label("Architecture").select_option("demo")
    page.get_by_label("Sequence length").fill("96")
    with page.expect_response(lambda r: r.url.endswith("/plan/table") and r.status == 200):
        page.get_by_label("Sequence length").dispatch_event("change")
    expect(page.locator('#plan-results td[data-flops]').first).to_be_visible()
    page.locator('a[data-launch="dora"]').click()
    page.wait_for_url(re.compile(r".*/jobs/new\?.*"))
    expect(page.get_by_role("heading", name="New fine-tuning job")).to_be_visible()
    expect(page.get_by_label("Method", exact=True)).to_have_value("dora")
    expect(page.get_by_label("Model", exact=True)).to_have_value("demo")
    expect(page.get_by_label("Sequence length")).to_have_value("96")
    page.get_by_role("link", name=re.compile("Compare every method")).click()
    page.wait_for_url("**/plan")


def test_make_it_fit_and_exact(page: Page) -> None:
    page.goto("/plan")
    page.get_by_label("Make it fit:").select_option("full")
    page.locator("#fit_gpu").select_option("H100 80GB")
    page.get_by_role("button", name="Make it fit").click()
    expect(page.locator("#fit-box [role=alert]")).to_contain_text("full needs")  # 8B full FT at 2048: not on 80 GB
    page.get_by_label("Make it fit:").select_option("lora")
    page.locator("#fit_gpu").select_option("RTX 4090")
    page.get_by_role("button", name="Make it fit").click()
    expect(page.locator('#fit-box [data-fit="batch_size"]')).to_be_visible()
    expect(page.locator("#fit-box a.primary")).to_have_attribute("href", re.compile(r"method=lora"))
    with page.expect_response(lambda r: r.url.endswith("/plan/table")):
        page.get_by_label("Architecture").select_option("demo")
    page.get_by_label("Sequence length").fill("64")
    with page.expect_response(lambda r: r.url.endswith("/plan/table") and r.status == 200):
        page.get_by_label("Sequence length").dispatch_event("change")
    page.get_by_role("button", name=re.compile("Exact")).click()
    expect(page.locator("#exact-progress")).to_be_visible()  # progress while the worker traces
    expect(page.locator('#plan-meta[data-mode="traced"]')).to_be_visible(timeout=90_000)
    expect(page.locator("#plan-results tbody tr")).to_have_count(9)
