"""One default per setting (issue 11, acceptance 6): the job form, the job API's schema, the plan
API's schema and the plan page show the same training defaults, and the form's learning rate is
the method's own. Read from what each surface really serves: rendered HTML and the OpenAPI schema."""
from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.api.routes import jobs, plan
from app.methods import REGISTRY
from app.web import pages, plan_pages
from tests.helpers.router_app import router_app

pytestmark = pytest.mark.unit

SHAPE = ("seq_len", "batch_size", "gradient_accumulation")  # what both a job and a plan take


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    with router_app(tmp_path_factory.mktemp("defaults"), api=(jobs.router, plan.router),
                    pages=(pages.router, plan_pages.router)) as app:
        yield app.client


def _inputs(html: str) -> dict[str, str]:
    """Each <input>'s value by its id, as the browser would fill it."""
    values = {}
    for tag in re.findall(r"<input\b[^>]*>", html):
        name = re.search(r'\bid="([^"]+)"', tag)
        value = re.search(r'\bvalue="([^"]*)"', tag)
        if name and value:
            values[name.group(1)] = value.group(1)
    return values


def _schema(client: TestClient) -> dict[str, Any]:
    return client.get("/openapi.json").json()["components"]["schemas"]


def _job_defaults(schemas: dict[str, Any], method: str) -> dict[str, Any]:
    """The defaults of `method`'s job body's hyperparameters, in the OpenAPI schema."""
    ref = schemas[f"{method.capitalize()}JobCreate"]["properties"]["hyperparameters"]
    ref = ref.get("$ref") or ref["allOf"][0]["$ref"]
    model = schemas[ref.rsplit("/", 1)[-1]]
    return {name: prop.get("default") for name, prop in model["properties"].items()}


def test_the_job_form_the_job_api_and_the_plan_api_share_the_training_shape(client: TestClient) -> None:
    schemas = _schema(client)
    job = _job_defaults(schemas, "lora")
    plan_api = {name: prop.get("default") for name, prop in schemas["PlanRequest"]["properties"].items()}
    form = _inputs(client.get("/jobs/new").text)
    plan_page = _inputs(client.get("/plan").text)
    for name in SHAPE:
        assert job[name] is not None, name
        assert plan_api[name] == job[name], name
        assert float(form[name]) == job[name], name
        assert float(plan_page[name]) == job[name], name
    assert plan_api["gradient_checkpointing"] == job["gradient_checkpointing"]
    assert job["seq_len"] == 512


def test_the_form_starts_at_the_api_s_run_length(client: TestClient) -> None:
    from app.schemas.hyperparameters import Hyperparameters

    form = _inputs(client.get("/jobs/new").text)
    assert int(form["max_steps"]) == Hyperparameters().max_steps  # what the API runs when neither is given


@pytest.mark.parametrize("method", list(REGISTRY))
def test_the_form_s_learning_rate_is_the_method_s_default_in_the_api_schema(client: TestClient, method: str) -> None:
    api = _job_defaults(_schema(client), method)["learning_rate"]
    fragment = _inputs(client.get("/jobs/new/options", params={"method": method}).text)
    assert float(fragment["learning_rate"]) == api == REGISTRY[method].learning_rate


def test_adapters_and_full_parameter_methods_have_their_usual_learning_rates() -> None:
    assert REGISTRY["lora"].learning_rate == 2e-4
    assert REGISTRY["full"].learning_rate == 2e-5
