"""Small things a new user hit (issue 17): Settings in the top navigation, "Allow its code" only for a model
that has code, timestamps with their time zone."""
from __future__ import annotations

import re

import pytest

from tests.helpers.api import job_body
from tests.helpers.local_api import LocalApi

pytestmark = pytest.mark.unit


def test_settings_is_in_the_top_navigation(api: LocalApi) -> None:
    nav = re.search(r'<nav aria-label="Main">(.*?)</nav>', api.client.get("/jobs").text, re.S)
    assert nav and '<a href="/settings">Settings</a>' in nav.group(1)


def test_allow_its_code_is_offered_only_for_a_model_that_ships_code(api: LocalApi) -> None:
    page = api.client.get("/models").text
    demo = re.search(r'<tr data-model="demo">(.*?)</tr>', page, re.S)
    assert demo and "Allow its code" not in demo.group(1) and "none" in demo.group(1)


def test_times_on_the_pages_say_they_are_utc(api: LocalApi) -> None:
    job = api.client.post("/api/v1/jobs", json=job_body())
    assert job.status_code == 201, job.text  # queued: no worker runs here
    page = api.client.get("/jobs").text
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", page)


def test_the_settings_page_has_its_title_and_one_webhooks_section(api: LocalApi) -> None:
    page = api.client.get("/settings").text
    assert "<title>Settings · Tunedeck</title>" in page and page.count('id="webhooks"') == 1
