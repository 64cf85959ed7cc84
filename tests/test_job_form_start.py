"""Where the new-job form starts: the real model on the task it learns, with rows held out (issue 12)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from app.demo_extraction import SUGGESTED_EVAL_COUNT, SUGGESTED_EVAL_EVERY, SUGGESTED_SAMPLE_EVERY
from tests.helpers.local_api import LocalApi
from tests.helpers.prompts import link_model

pytestmark = pytest.mark.integration


def _selected(html: str, select_id: str) -> str:
    block = re.search(rf'<select id="{select_id}".*?</select>', html, re.S)
    assert block, select_id
    chosen = re.search(r'<option value="([^"]+)"[^>]*\bselected\b', block.group(0))
    assert chosen, block.group(0)[:500]
    return chosen.group(1)


def _value(html: str, name: str) -> str:
    found = re.search(rf'<input id="{name}" name="{name}"[^>]*value="([^"]*)"', html)
    assert found, name
    return found.group(1)


def test_without_smollm2_the_form_starts_on_the_demo_model_and_dataset_with_nothing_held_out(api: LocalApi) -> None:
    html = api.client.get("/jobs/new").text
    assert _selected(html, "model") == "demo"
    assert "random-weight test model" in html  # the demo model's option says what it is
    assert _selected(html, "dataset") == "demo"
    assert _value(html, "eval_count") == "" and _value(html, "eval_every") == "0"


def test_with_smollm2_the_form_starts_on_it_and_the_extraction_task_with_rows_held_out(
        api: LocalApi, smollm2: Path) -> None:
    link_model(api.data_dir, smollm2)
    html = api.client.get("/jobs/new").text
    assert _selected(html, "model") == "smollm2-135m-instruct"
    assert _selected(html, "dataset") == "demo-extract"
    assert _value(html, "eval_count") == str(SUGGESTED_EVAL_COUNT)
    assert _value(html, "eval_every") == str(SUGGESTED_EVAL_EVERY)
    assert _value(html, "sample_every") == str(SUGGESTED_SAMPLE_EVERY)
    assert "Extract the person" in html  # the preview renders a row of the extraction task
    # What the user chose stays chosen.
    html = api.client.get("/jobs/new", params={"dataset": "demo", "eval_count": "3"}).text
    assert _selected(html, "dataset") == "demo" and _value(html, "eval_count") == "3"
