"""Issue 14, finding 5: Launch from a plan row carries every setting of the row into the job form, and
the form shows the live estimate of what it would launch, equal to the row's peak.

The form is read as a browser submits it (each input's value, checked boxes, selected options), so
"carried" means what Launch would really send, not what the address says.
"""
from __future__ import annotations

import html
import re
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from fastapi.testclient import TestClient

from app.methods import METHODS
from tests.helpers.local_api import LocalApi

pytestmark = pytest.mark.integration

# The plan page's inputs: nothing at its default, so a setting the link drops shows.
PLAN = {"model": "demo", "dataset": "demo", "seq_len": "96", "batch_size": "2", "gradient_accumulation": "3",
        "gradient_checkpointing": "on", "precision": "mixed", "optimizer": "sgd", "epochs": "1"}


class _FormValues(HTMLParser):
    """The name -> value pairs a browser would submit for the form with id `form_id`."""

    def __init__(self, form_id: str) -> None:
        super().__init__()
        self.form_id, self.inside, self.select = form_id, False, None
        self.values: dict[str, str] = {}
        self.first_option: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.inside = a.get("id") == self.form_id
        if not self.inside:
            return
        if tag == "input" and a.get("name"):
            if a.get("type") == "checkbox":
                if "checked" in a:
                    self.values[a["name"]] = a.get("value") or "on"
            elif a.get("type") != "file":
                self.values[a["name"]] = a.get("value", "")
        elif tag == "select":
            self.select = a.get("name")
        elif tag == "option" and self.select:
            self.first_option.setdefault(self.select, a.get("value", ""))
            if "selected" in a:
                self.values[self.select] = a.get("value", "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "select" and self.select:
            self.values.setdefault(self.select, self.first_option.get(self.select, ""))
            self.select = None
        elif tag == "form":
            self.inside = False


def form_values(page: str) -> dict[str, str]:
    parser = _FormValues("job-form")
    parser.feed(page)
    return parser.values


def _rows(client: TestClient) -> dict[str, tuple[int, str]]:
    """method -> (the row's peak bytes, its Launch address) from the plan table."""
    table = client.post("/plan/table", data=PLAN)
    assert table.status_code == 200, table.text[:2000]
    rows = {}
    for method in METHODS:
        row = re.search(rf'<tr[^>]*data-method="{method}".*?</tr>', table.text, re.S)
        assert row, method
        peak = re.search(r'class="peak" data-bytes="(\d+)"', row.group(0))
        link = re.search(rf'href="([^"]+)" data-launch="{method}"', row.group(0))
        assert peak and link, method
        rows[method] = (int(peak.group(1)), html.unescape(link.group(1)))
    return rows


@pytest.fixture(scope="module")
def rows(api: LocalApi) -> dict[str, tuple[int, str]]:
    return _rows(api.client)


@pytest.mark.parametrize("method", METHODS)
def test_launch_carries_every_setting_of_the_row_into_the_form(api: LocalApi, rows: dict[str, Any],
                                                               method: str) -> None:
    _peak, link = rows[method]
    values = form_values(api.client.get(link).text)
    assert (values["method"], values["model"], values["dataset"]) == (method, "demo", "demo")
    assert (values["seq_len"], values["batch_size"], values["gradient_accumulation"]) == ("96", "2", "3")
    assert values["precision"] == "mixed"
    takes_checkpointing = method != "prefix"  # prefix cannot (its row says it was estimated without)
    assert ("gradient_checkpointing" in values) is takes_checkpointing
    expected_optimizer = {"qlora": "paged_adamw_8bit", "galore": None}.get(method, "sgd")  # what each job takes
    assert values.get("optimizer") == expected_optimizer
    for name, value in dict(parse_qsl(urlsplit(link).query)).items():  # every option the link names arrives
        assert values.get(name) == value, name


@pytest.mark.parametrize("method", METHODS)
def test_the_form_estimates_what_it_would_launch_at_the_rows_peak(api: LocalApi, rows: dict[str, Any],
                                                                 method: str) -> None:
    peak, link = rows[method]
    page = api.client.get(link).text
    shown = re.search(r'id="estimate-peak" data-bytes="(\d+)"', page)
    assert shown, page[page.find('id="job-estimate"'):][:1500]
    assert int(shown.group(1)) == peak
    live = api.client.get("/jobs/new/estimate", params=form_values(page)).text  # what htmx asks on a change
    assert f'id="estimate-peak" data-bytes="{peak}"' in live


def test_an_invalid_value_shows_its_field_error_instead_of_a_number(api: LocalApi, rows: dict[str, Any]) -> None:
    values = {**form_values(api.client.get(rows["lora"][1]).text), "r": "0", "batch_size": "abc"}
    live = api.client.get("/jobs/new/estimate", params=values).text
    assert 'id="estimate-peak"' not in live
    assert 'data-field="r"' in live and 'data-field="batch_size"' in live


def test_a_cpu_only_stack_says_its_workers_cannot_be_read_and_shows_the_catalog_gpus(
        api: LocalApi, rows: dict[str, Any]) -> None:
    live = api.client.get(rows["lora"][1]).text  # this app has no Redis: the workers are unknown
    assert "The workers cannot be read right now" in live and 'id="estimate-catalog"' in live


def test_explicit_target_modules_and_checkboxes_survive_the_link() -> None:
    """A plan's method_config (the API's) with module names and a box on arrives as the same options."""
    from app.planner.launch_link import row_fields
    from app.web.method_fields import method_config_from_form

    options = {"target_modules": ["q_proj", "v_proj"], "use_rslora": True, "r": 16}
    fields = row_fields("dora", {"method_config": {"dora": options}})
    config = method_config_from_form("dora", fields)
    assert {k: config[k] for k in options} == {"target_modules": ["q_proj", "v_proj"], "use_rslora": True, "r": "16"}
