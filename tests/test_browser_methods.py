"""Issue 3 in a real headless Chromium: the Method field offers all nine methods, each shows
its own options and hides the others', and a QLoRA job launched from the form ends with its
options, trainable parameters and one download link per artifact on the job page. Issue 14,
acceptance 3: Launch on every plan row opens a form whose live estimate is the row's peak."""
from __future__ import annotations

import re
from urllib.parse import urlencode

import pytest
from playwright.sync_api import Page, expect

from app.methods import METHOD_LABELS, METHOD_OPTIONS
from tests.helpers.browser import TIMEOUT_MS, fill_job_form

pytestmark = pytest.mark.browser

# One option only each method has (or only its family has), as the form names its inputs; full's only
# option, optimizer, is every method's but GaLore's (which steps with its own GaLoreAdamW).
OWN_OPTION = {
    "full": "optimizer", "freeze": "trainable_layers", "lora": "use_rslora", "dora": "use_rslora",
    "qlora": "quant_type", "galore": "update_proj_gap", "adapters": "reduction_factor",
    "prefix": "num_virtual_tokens", "prompt": "init_text",
}


def test_the_method_field_offers_all_nine_methods(page: Page) -> None:
    page.goto("/jobs/new")
    options = page.get_by_label("Method", exact=True).locator("option")
    expect(options).to_have_count(9)
    for method, label in METHOD_LABELS.items():
        option = page.locator(f'#method option[value="{method}"]')
        expect(option).to_have_text(label)
        expect(option).to_be_enabled()


@pytest.mark.parametrize("method", list(METHOD_OPTIONS))
def test_choosing_a_method_shows_its_options_with_hints_and_hides_the_others(page: Page, method: str) -> None:
    page.goto("/jobs/new")
    page.get_by_label("Method", exact=True).select_option(method)
    fieldset = page.locator("#method-options")
    expect(fieldset.locator("legend")).to_have_text(f"{METHOD_LABELS[method]} options")
    own = set(METHOD_OPTIONS[method].model_fields)
    for name in own:
        expect(fieldset.locator(f'[name="{name}"]')).to_have_count(1)
    expect(fieldset.locator(f'[name="{OWN_OPTION[method]}"]')).to_be_visible()
    for other, option in OWN_OPTION.items():
        if option not in own:
            expect(fieldset.locator(f'[name="{option}"]')).to_have_count(0)
    expect(fieldset.locator(".hint")).to_have_count(len(own))  # a one-line hint per option


def test_a_qlora_job_from_the_form_shows_its_options_parameters_and_both_downloads(page: Page) -> None:
    fill_job_form(page, name="browser-qlora", method="qlora", max_steps="4", batch_size="2")
    expect(page.locator('#method-options [name="quant_type"]')).to_be_visible()
    page.locator('#method-options [name="quant_type"]').select_option("fp4")
    page.get_by_role("button", name="Launch").click()
    page.wait_for_url(re.compile(r"/jobs/[^/]+$"))

    badge = page.locator("#status .badge")
    expect(badge).to_have_attribute("data-status", "succeeded", timeout=TIMEOUT_MS)
    summary = page.locator("#summary")
    expect(summary).to_contain_text("qlora")
    expect(summary).to_contain_text(re.compile(r"quant_type\s*fp4"))
    expect(summary).to_contain_text(re.compile(r"Trainable parameters\s*[\d,]+ of [\d,]+ \(\d+\.\d\d%\)"))
    expect(page.get_by_role("link", name="Download adapter")).to_be_visible(timeout=30_000)
    expect(page.get_by_role("link", name="Download merged")).to_be_visible()


# A plan on the demo model and dataset with every setting away from its default, as the plan page's address.
PLAN = {"model": "demo", "dataset": "demo", "seq_len": "96", "batch_size": "2", "gradient_accumulation": "3",
        "gradient_checkpointing": "on", "precision": "mixed", "optimizer": "sgd"}


def test_launch_on_every_plan_row_opens_a_form_whose_live_estimate_is_the_rows_peak(page: Page) -> None:
    plan = "/plan?" + urlencode(PLAN)
    page.goto(plan)
    expect(page.locator("#plan-results tbody tr")).to_have_count(9)
    peaks = {m: page.locator(f'tr[data-method="{m}"] .peak').get_attribute("data-bytes") for m in METHOD_OPTIONS}
    for index, (method, peak) in enumerate(peaks.items()):
        if index:
            page.goto(plan)
        page.locator(f'a[data-launch="{method}"]').click()
        page.wait_for_url(re.compile(r".*/jobs/new\?.*"))
        expect(page.get_by_label("Method", exact=True)).to_have_value(method)
        expect(page.locator("#estimate-peak")).to_have_attribute("data-bytes", peak or "")
        expect(page.locator("#estimate-workers")).to_contain_text("CPU-only")  # the stack's worker has no GPU
        if method != "prefix":  # prefix cannot checkpoint: its row was estimated without, and so is its form
            expect(page.locator("#gradient_checkpointing")).to_be_checked()
    # The estimate is live: a change in the form re-estimates it without a reload, an invalid value says why.
    batch = page.get_by_label("Batch size")
    with page.expect_response(lambda r: "/jobs/new/estimate" in r.url and r.status == 200):
        batch.fill("4")
        batch.dispatch_event("change")
    expect(page.locator("#estimate-peak")).not_to_have_attribute("data-bytes", peaks["prompt"] or "")
    with page.expect_response(lambda r: "/jobs/new/estimate" in r.url):
        batch.fill("0")
        batch.dispatch_event("change")
    expect(page.locator('#estimate-errors li[data-field="batch_size"]')).to_be_visible()
    expect(page.locator("#estimate-peak")).to_have_count(0)
