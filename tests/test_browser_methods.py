"""Issue 3 in a real headless Chromium: the Method field offers all nine methods, each shows
its own options and hides the others', and a QLoRA job launched from the form ends with its
options, trainable parameters and one download link per artifact on the job page."""
from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from app.methods import METHOD_LABELS, METHOD_OPTIONS
from tests.helpers.browser import TIMEOUT_MS, fill_job_form

pytestmark = pytest.mark.browser

# One option only each method has (or only its family has), as the form names its inputs.
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
