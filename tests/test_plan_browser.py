"""The plan page in a real headless Chromium: the table follows the inputs without a reload, Launch fills the job form."""
from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

pytestmark = pytest.mark.browser

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
    page.locator("#fit_gpu").select_option("RTX 4090")
    page.get_by_role("button", name="Make it fit").click()
    expect(page.locator("#fit-box [role=alert]")).to_contain_text("GiB over")  # 8B full FT at 2048: not on 24 GB
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


def test_dataset_tokens_hub_errors_and_saved_plans_swap_into_their_places(page: Page) -> None:
    """Issue 14, findings 8 and 9, as only a browser shows them: the table's answer updates the Tokens
    field (the dataset's count, disabled) and the hub field's error out of band; Save lists the plan."""
    page.goto("/plan")
    with page.expect_response(lambda r: r.url.endswith("/plan/table")):
        page.get_by_label("Architecture").select_option("demo")
    page.get_by_label("Sequence length").fill("256")  # the demo dataset's prompts are 72+ tokens
    with page.expect_response(lambda r: r.url.endswith("/plan/table") and r.status == 200):
        page.get_by_label("Or measure a dataset").select_option("demo")
    tokens = page.locator("#dataset_tokens")
    expect(tokens).to_be_disabled()
    assert tokens.input_value() not in ("", "10000000")
    hub = page.get_by_label("Or a Hugging Face Hub id")
    hub.fill("example-org/not-a-real-model")
    with page.expect_response(lambda r: r.url.endswith("/plan/table") and r.status == 422):
        hub.dispatch_event("change")
    expect(page.locator("#hub_model-error")).to_contain_text("unknown model 'example-org/not-a-real-model'")
    hub.fill("")
    with page.expect_response(lambda r: r.url.endswith("/plan/table") and r.status == 200):
        hub.dispatch_event("change")
    expect(page.locator("#hub_model-error")).to_be_empty()
    with page.expect_response(lambda r: r.url.endswith("/plan/save") and r.status == 200):
        page.get_by_role("button", name="Save plan").click()
    plan_id = page.locator("#plan-link").get_attribute("href")
    expect(page.locator(f'#recent-plans a[href="{plan_id}"]')).to_be_visible()
