"""The method registry is the one declaration every layer reads (issue 11, acceptance 3).

Job submission (`POST /api/v1/jobs`) and the planner (`POST /api/v1/plan`) refuse
exactly the same bad option sets, naming the same field with the same message,
because both call the registry's one check. The apps here are the real routers
on a real SQLite database with no worker: a refusal never reaches the queue.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, func, select

from app.api.routes import jobs, plan
from app.methods import REGISTRY
from app.models import Dataset, Job
from tests.helpers.demo_config import DEMO
from tests.helpers.method_cases import BAD_OPTIONS, BadOptions
from tests.helpers.router_app import router_app

pytestmark = pytest.mark.unit

MODEL = "registry-demo"  # a model folder with the demo architecture: the job and the plan read the same config


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    data_dir = tmp_path_factory.mktemp("registry")
    folder = data_dir / "models" / MODEL
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(DEMO), encoding="utf-8")
    with router_app(data_dir, api=(jobs.router, plan.router)) as app:
        with Session(app.engine) as session:
            session.add(Dataset(id="rows", owner_id=None, name="rows", format="alpaca", rows=100, size_bytes=1,
                                path="datasets/rows.jsonl"))
            session.commit()
        yield app.client


def _refusal(response: Any, method: str) -> tuple[tuple[str, ...], str]:
    """(the option path without `body`, `method_config` and the method tag, the message) of the first error."""
    assert response.status_code == 422, response.text
    error = response.json()["detail"][0]
    path = tuple(str(p) for p in error["loc"] if p not in ("body", method))
    assert path[:1] == ("method_config",), error
    return path[1:], error["msg"]


def _submit(client: TestClient, case: BadOptions) -> Any:
    return client.post("/api/v1/jobs", json={
        "model": MODEL, "dataset": "rows", "method": case.method, "method_config": case.options,
        "hyperparameters": {"max_steps": 2, "seq_len": case.seq_len},
    })


def _plan(client: TestClient, case: BadOptions) -> Any:
    return client.post("/api/v1/plan", json={"model": MODEL, "methods": [case.method], "seq_len": case.seq_len,
                                             "method_config": {case.method: case.options}})


def test_the_case_list_covers_every_registered_method() -> None:
    assert {case.method for case in BAD_OPTIONS} == set(REGISTRY)


@pytest.mark.parametrize("case", BAD_OPTIONS, ids=lambda c: f"{c.method}-{c.field}-{c.says[:20]}")
def test_submission_and_plan_refuse_the_same_options_with_the_same_message(client: TestClient,
                                                                          case: BadOptions) -> None:
    job_field, job_message = _refusal(_submit(client, case), case.method)
    plan_field, plan_message = _refusal(_plan(client, case), case.method)
    expected = (case.field,) if case.field is not None else ()
    assert job_field == plan_field == expected
    assert job_message == plan_message
    assert case.says in job_message


def test_a_refused_job_is_not_stored(client: TestClient) -> None:
    with Session(client.app.state.engine) as session:  # type: ignore[attr-defined]
        before = session.exec(select(func.count()).select_from(Job)).one()
    for case in BAD_OPTIONS:
        assert _submit(client, case).status_code == 422
    with Session(client.app.state.engine) as session:  # type: ignore[attr-defined]
        assert session.exec(select(func.count()).select_from(Job)).one() == before


def test_every_method_declares_its_traits_consistently() -> None:
    for name, spec in REGISTRY.items():
        assert spec.name == name and spec.label and spec.trains
        assert spec.options().model_dump() is not None  # every option has a default
        assert spec.default_optimizer in spec.optimizers
        assert ("merged" in spec.downloads) == spec.lora  # only LoRA-family adapters fold into the base
        assert spec.artifact == ("model" if spec.trains_base or name == "freeze" else spec.artifact)
        if spec.virtual_tokens:
            assert "num_virtual_tokens" in spec.options.model_fields
