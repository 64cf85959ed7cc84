"""Issue 14, findings 3, 4, 6, 8 (hub id, tokens field) and 9: the plan page, its badges, "Make it fit", stored plans.

The real plan routers and pages on a real, seeded SQLite database (tests/helpers/router_app.py), for
one logged-in user; Llama-3.1-8B at seq 2048 × micro-batch 4 in bf16 unless a test says otherwise.
"""
from __future__ import annotations

import html
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from app import storage
from app.api.deps import get_dataset_tokens
from app.api.routes import plan, plans
from app.datasets.crud import create_dataset
from app.models import PlanRecord, User
from app.web import plan_pages
from tests.helpers.router_app import RouterApp, router_app

pytestmark = pytest.mark.unit

SHAPE = {"model": "llama-3.1-8b", "seq_len": "2048", "batch_size": "4"}


@pytest.fixture
def app(tmp_path: Path) -> Iterator[RouterApp]:
    with router_app(tmp_path, api=(plan.router, plans.router), pages=(plan_pages.router,),
                    email="findings@example.com") as built:
        yield built


@pytest.fixture
def client(app: RouterApp) -> TestClient:
    return app.client


def _row(page: str, method: str) -> str:
    """The table row of `method`, as HTML."""
    found = re.search(rf'<tr data-method="{method}">(.*?)</tr>', page, re.S)
    assert found, f"no row for {method}"
    return found.group(1)


def _first(pattern: str, text: str) -> str:
    """The first group of `pattern`'s first match in `text` (the test fails when there is none)."""
    found = re.search(pattern, text, re.S)
    assert found, f"{pattern!r} not found"
    return found.group(1)


def _text(fragment: str) -> str:
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", fragment)))


def _plans(app: RouterApp) -> list[PlanRecord]:
    with Session(app.engine) as session:
        return list(session.exec(select(PlanRecord)))


# Finding 3: an option a method cannot take says so on its row, and the badges compare like with like.

def test_prefix_row_says_on_the_page_that_it_ran_without_checkpointing(client: TestClient) -> None:
    """Finding 3: prefix tuning cannot checkpoint; its row (not a notes list) says it was estimated without."""
    page = client.post("/plan/table", data={**SHAPE, "gradient_checkpointing": "on", "gpus": ["H100 80GB"]})
    assert page.status_code == 200, page.text
    row = _row(page.text, "prefix")
    assert "data-not-applied" in row
    assert "without gradient checkpointing" in _text(row)
    assert "data-not-applied" not in _row(page.text, "lora")  # LoRA took it


def test_a_method_that_could_not_honour_checkpointing_is_not_ranked_against_those_that_did(
        client: TestClient) -> None:
    """Finding 3: without its recomputation prefix is cheaper than LoRA with it; that is no like-for-like win."""
    body = client.post("/api/v1/plan", json={"model": "llama-3.1-8b", "methods": ["lora", "prefix"], "seq_len": 2048,
                                             "batch_size": 4, "gradient_checkpointing": True, "gpus": ["H100 80GB"]}
                       ).json()
    by_method = {e["method"]: e for e in body["estimates"]}
    assert by_method["prefix"]["gpus"][0]["cost"] < by_method["lora"]["gpus"][0]["cost"]  # why it matters
    assert by_method["prefix"]["not_applied"] and not by_method["lora"]["not_applied"]
    assert body["badges"]["cheapest"]["method"] == "lora" and body["badges"]["fastest"]["method"] == "lora"
    assert [entry["method"] for entry in body["badges"]["not_ranked"]] == ["prefix"]


# Finding 4: full fine-tuning's bf16 recipe is named, and mixed precision is one click away.

def test_full_row_names_the_pure_bf16_recipe_it_assumes(client: TestClient) -> None:
    """Finding 4: "bf16 weights" for full FT means bf16 AdamW states, not the usual fp32-master-weight recipe."""
    page = client.post("/plan/table", data={**SHAPE, "gpus": ["H200"]})
    recipe = _text(_first(r'data-recipe="[^"]*"[^>]*>(.*?)</', _row(page.text, "full")))
    assert "pure bf16" in recipe and "no fp32 master weights" in recipe
    api = client.post("/api/v1/plan", json={"model": "llama-3.1-8b", "methods": ["full", "lora"]}).json()
    assert "pure bf16" in api["estimates"][0]["recipe"] and "pure bf16" not in api["estimates"][1]["recipe"]


def test_full_freeze_and_galore_rows_replan_with_mixed_precision_in_one_click(client: TestClient) -> None:
    """Finding 4: a link on the rows that train base weights re-plans the same form with precision=mixed."""
    page = client.post("/plan/table", data={**SHAPE, "gradient_checkpointing": "on", "gpus": ["H200"]})
    for method in ("full", "freeze", "galore"):
        assert 'data-replan="mixed"' in _row(page.text, method), method
    assert 'data-replan="mixed"' not in _row(page.text, "lora")
    href = html.unescape(_first(r'data-replan="mixed" href="([^"]+)"', _row(page.text, "full")))
    query = parse_qs(urlsplit(href).query)
    assert query["precision"] == ["mixed"]
    assert query["seq_len"] == ["2048"] and query["gradient_checkpointing"] == ["on"]  # every other input kept
    mixed = client.get(href)
    assert mixed.status_code == 200 and '<option value="mixed" selected>' in mixed.text
    assert "fp32 master weights" in _text(_row(mixed.text, "full"))
    bf16_peak = int(_first(r'data-bytes="(\d+)"', _row(page.text, "full")))
    assert int(_first(r'data-bytes="(\d+)"', _row(mixed.text, "full"))) > bf16_peak  # fp32 weights and states


# Finding 6: "Make it fit" keeps the sequences per step, tries 8-bit optimisers, says what is missing.

def _fit(client: TestClient, **body: Any) -> dict[str, Any]:
    response = client.post("/api/v1/plan/fit", json={"model": "llama-3.1-8b", "seq_len": 2048, **body})
    assert response.status_code == 200, response.text
    return response.json()


def test_make_it_fit_keeps_the_sequences_per_step_exactly(client: TestClient) -> None:
    """Finding 6: 8 sequences per step stay 8 (it answered micro-batch 5 × accumulation 2 = 10)."""
    fit = _fit(client, methods=["lora"], gpus=["RTX 4090"], batch_size=8)
    assert fit["fits"] and fit["batch_size"] * fit["gradient_accumulation"] == 8


def test_make_it_fit_tries_an_8bit_optimiser(client: TestClient) -> None:
    """Finding 6: full FT of 8B misses an 80 GB card with AdamW even checkpointed; 8-bit AdamW's states fit it."""
    fit = _fit(client, methods=["full"], gpus=["H100 80GB"], batch_size=4)
    assert fit["fits"] and fit["optimizer"] == "adamw_8bit"
    assert fit["batch_size"] * fit["gradient_accumulation"] == 4
    assert any("8-bit AdamW" in change for change in fit["changes"])


def test_make_it_fit_that_cannot_says_how_much_is_missing_and_never_suggests_the_chosen_method(
        client: TestClient) -> None:
    """Finding 6: 70B QLoRA on a 24 GB card answered "try qlora"; it must say how far over its best try is."""
    fit = _fit(client, model="llama-3.1-70b", methods=["qlora"], gpus=["RTX 4090"], batch_size=4)
    assert not fit["fits"] and fit["over_bytes"] > 0
    gib_over = f"{fit['over_bytes'] / 2**30:.1f} GiB over"
    assert gib_over in fit["reason"] and "micro-batch 1" in fit["reason"] and "checkpointing on" in fit["reason"]
    assert "try qlora" not in fit["reason"] and "qlora" not in fit["reason"].split("best configuration")[-1]


def test_make_it_fit_shortens_seq_len_only_when_asked(client: TestClient) -> None:
    """Finding 6: a shorter sequence changes what trains, so it is tried only on request."""
    body = {"methods": ["lora"], "gpus": ["RTX 4090"], "seq_len": 32768, "batch_size": 1}
    kept = _fit(client, **body)
    assert not kept["fits"] and kept["seq_len"] == 32768
    shorter = _fit(client, **body, allow_shorter_seq_len=True)
    assert shorter["fits"] and shorter["seq_len"] < 32768
    assert any("seq_len" in change for change in shorter["changes"])


# Finding 8 (first two parts): the hub id field, and the tokens field in dataset mode.

def test_hub_id_beside_a_catalog_model_gets_the_api_s_422_at_its_field(client: TestClient,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Finding 8: the page plans the hub id as the API does, and its refusal is shown at the hub field."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # no hub here: fail at once
    hub_id = "example-org/not-a-real-model"
    api = client.post("/api/v1/plan", json={"model": hub_id})
    assert api.status_code == 422
    message = api.json()["detail"][0]["msg"]
    page = client.post("/plan/table", data={**SHAPE, "hub_model": hub_id})
    assert page.status_code == 422
    assert html.unescape(_first(r'id="hub_model-error"[^>]*>(.*?)</', page.text)).strip() == message
    assert 'data-field="hub_model"' in page.text


def test_dataset_mode_shows_the_counted_tokens_in_the_tokens_field(app: RouterApp) -> None:
    """Finding 8: with a dataset the Tokens field showed 10,000,000 while the table used the dataset's count."""
    rows = "".join(json.dumps({"prompt": f"Question {i}?", "completion": f" Answer {i}."}) + "\n" for i in range(40))
    with Session(app.engine) as session:
        dataset = create_dataset(session, io.BytesIO(rows.encode()), "jsonl", "forty rows")
    app.client.app.dependency_overrides[get_dataset_tokens] = lambda: (  # type: ignore[attr-defined]
        lambda dataset_id, arch: storage.absolute(dataset.path) if dataset_id == dataset.id else None)  # deps' lookup
    api = app.client.post("/api/v1/plan", json={"model": "demo", "seq_len": 64, "dataset": dataset.id})
    counted = api.json()["dataset_tokens"]
    assert api.status_code == 200 and counted != 10_000_000
    fragment = app.client.post("/plan/table", data={"model": "demo", "seq_len": "64", "dataset": dataset.id,
                                                    "dataset_tokens": "10000000"})
    assert fragment.status_code == 200, fragment.text
    field = _first(r'(<input id="dataset_tokens"[^>]*>)', fragment.text)
    assert 'hx-swap-oob="true"' in field and f'value="{counted}"' in field and "disabled" in field
    page = app.client.get("/plan", params={"model": "demo", "seq_len": "64", "dataset": dataset.id})
    field = _first(r'(<input id="dataset_tokens"[^>]*>)', page.text)
    assert f'value="{counted}"' in field and "disabled" in field and "10000000" not in field


# Finding 9: a plan is stored when the user asks, once per request, and the list is the user's own.

def test_changing_fields_on_the_page_stores_no_plan(app: RouterApp) -> None:
    """Finding 9: every field change stored a plan ("dozens of near-identical rows within minutes")."""
    for seq_len in ("512", "1024", "2048"):
        assert app.client.post("/plan/table", data={**SHAPE, "seq_len": seq_len}).status_code == 200
    assert app.client.get("/plan").status_code == 200
    assert _plans(app) == []


def test_save_stores_the_plan_on_the_page_once(app: RouterApp) -> None:
    """Finding 9: Save stores the plan shown; saving the same request again updates that plan's time."""
    first = app.client.post("/plan/save", data={**SHAPE, "gpus": ["L4"]})
    assert first.status_code == 200
    plan_id = _first(r'id="plan-link" href="/plan\?plan=([0-9a-f]+)"', first.text)
    before = _plans(app)[0].created_at
    again = app.client.post("/plan/save", data={**SHAPE, "gpus": ["L4"]})
    assert f'/plan?plan={plan_id}"' in again.text
    records = _plans(app)
    assert [r.id for r in records] == [plan_id] and records[0].created_at > before


def test_the_api_stores_an_identical_request_once_with_the_newest_time(app: RouterApp) -> None:
    """Finding 9: A, B, A through the API is two plans, A the newest (not three rows)."""
    body = {"model": "llama-3.1-8b", "methods": ["lora"]}
    ids = [app.client.post("/api/v1/plan", json={**body, "seq_len": s}).json()["id"] for s in (512, 1024, 512)]
    assert ids[0] == ids[2] != ids[1]
    listed = app.client.get("/api/v1/plans").json()
    assert listed["count"] == 2 and [p["id"] for p in listed["data"]] == [ids[0], ids[1]]


def test_an_admin_s_recent_plans_are_their_own_and_all_users_is_a_separate_view(app: RouterApp) -> None:
    """Finding 9: an admin's list mixed other users' plans with their own."""
    with Session(app.engine) as session:
        other = User(email="someone-else@example.com", password_hash="x")
        session.add(other)
        session.commit()
        session.add(PlanRecord(owner_id=other.id, label="someone else's plan", request={"model": "demo"},
                               result={"badges": {}}))
        session.commit()
        other_id = other.id
    app.user.is_admin = True
    mine = app.client.post("/api/v1/plan", json={"model": "demo", "methods": ["lora"], "seq_len": 64}).json()["id"]
    assert [p["id"] for p in app.client.get("/api/v1/plans").json()["data"]] == [mine]
    page = app.client.get("/plan").text
    recent = _first(r'<ul id="recent-plans">(.*?)</ul>', page)
    assert "someone else" not in recent and f"/plan?plan={mine}" in recent
    everyone = app.client.get("/api/v1/plans", params={"all_users": "true"}).json()["data"]
    assert {p["owner_id"] for p in everyone} == {app.user.id, other_id}
    labelled = app.client.get("/plan", params={"plans": "all"}).text
    assert "All users' plans" in labelled and "someone-else@example.com" in labelled
    app.user.is_admin = False
    assert app.client.get("/api/v1/plans", params={"all_users": "true"}).status_code == 403


def test_a_reopened_plan_keeps_its_method_options_as_it_re_plans_and_launches(app: RouterApp) -> None:
    """A plan made through the API with LoRA r 64 reopened on the page: a change re-plans with r 64 (not
    the page's defaults) and Launch carries r 64 into the job form."""
    body = {"model": "llama-3.1-8b", "methods": ["lora"], "seq_len": 1024, "method_config": {"lora": {"r": 64}}}
    made = app.client.post("/api/v1/plan", json=body).json()
    page = app.client.get(f"/plan?plan={made['id']}")
    hidden = html.unescape(_first(r'name="method_config_json" value="([^"]+)"', page.text))
    assert json.loads(hidden) == {"lora": {"r": 64}}
    replanned = app.client.post("/plan/table", data={"model": "llama-3.1-8b", "seq_len": "1024", "methods": ["lora"],
                                                     "method_config_json": hidden})
    default = app.client.post("/plan/table", data={"model": "llama-3.1-8b", "seq_len": "1024", "methods": ["lora"]})
    trainable = r'data-params="(\d+)"'
    r64 = int(_first(trainable, _row(replanned.text, "lora")))
    assert r64 == made["estimates"][0]["trainable_params"] == 8 * int(_first(trainable, _row(default.text, "lora")))
    launch = html.unescape(_first(r'href="(/jobs/new\?[^"]+)"', _row(replanned.text, "lora")))
    assert parse_qs(urlsplit(launch).query)["r"] == ["64"]
    broken = app.client.post("/plan/table", data={**SHAPE, "method_config_json": "[1, 2]"})
    assert broken.status_code == 422 and 'data-field="method_config"' in broken.text
