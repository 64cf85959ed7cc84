"""POST /api/v1/jobs refuses bad configs with a 422 that names the field, before anything is queued."""
from __future__ import annotations

import httpx
import pytest

from tests.helpers.api import job_body
from tests.helpers.local_api import LocalApi

# The app in-process with no worker and no Redis: every check here is answered before anything is queued.
pytestmark = pytest.mark.unit


@pytest.fixture
def client(api: LocalApi) -> httpx.Client:
    return api.client


def _locs(response: httpx.Response) -> list[list]:
    assert response.status_code == 422, response.text
    return [item["loc"] for item in response.json()["detail"]]


def _count(client: httpx.Client) -> int:
    return client.get("/api/v1/jobs").json()["count"]


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"hyperparameters": {"learning_rate": -1}}, "learning_rate"),
        ({"hyperparameters": {"batch_size": 0}}, "batch_size"),
        ({"hyperparameters": {"max_steps": 0}}, "max_steps"),
        ({"hyperparameters": {"warp_speed": 9}}, "warp_speed"),
        ({"method_config": {"r": 0}}, "r"),
        ({"method_config": {"dropout": 1.5}}, "dropout"),
        ({"method_config": {"target_modules": "everything"}}, "target_modules"),
        ({"method_config": {"rank": 8}}, "rank"),
        ({"hyperparameters": {"precision": "fp8"}}, "precision"),
        ({"surprise": True}, "surprise"),
    ],
)
def test_out_of_range_and_unknown_fields_are_named(client: httpx.Client, overrides: dict, field: str) -> None:
    before = _count(client)
    locs = _locs(client.post("/api/v1/jobs", json=job_body(**overrides)))
    assert any(loc[-1] == field for loc in locs), locs
    assert _count(client) == before


def test_an_unknown_method_is_refused(client: httpx.Client) -> None:
    locs = _locs(client.post("/api/v1/jobs", json=job_body(method="magic")))
    assert any("method" in loc for loc in locs)


def test_both_max_steps_and_epochs_is_refused(client: httpx.Client) -> None:
    response = client.post("/api/v1/jobs", json=job_body(hyperparameters={"epochs": 1}))
    assert response.status_code == 422
    assert "either max_steps or epochs" in response.text


def test_a_sequence_length_above_the_model_limit_names_seq_len(client: httpx.Client) -> None:
    locs = _locs(client.post("/api/v1/jobs", json=job_body(hyperparameters={"seq_len": 4096})))
    assert locs == [["body", "hyperparameters", "seq_len"]]


def test_an_unknown_dataset_names_dataset(client: httpx.Client) -> None:
    assert _locs(client.post("/api/v1/jobs", json=job_body(dataset="nope"))) == [["body", "dataset"]]


def test_an_unknown_local_model_names_model(client: httpx.Client) -> None:
    response = client.post("/api/v1/jobs", json=job_body(model="no-such-model"))
    assert _locs(response) == [["body", "model"]]


def test_a_hub_id_that_cannot_be_reached_gets_a_clear_error(client: httpx.Client) -> None:
    response = client.post("/api/v1/jobs", json=job_body(model="meta-llama/Llama-3.1-8B"))
    assert _locs(response) == [["body", "model"]]
    assert "cannot fetch meta-llama/Llama-3.1-8B from the model hub" in response.json()["detail"][0]["msg"]


def test_a_url_is_not_a_model_id(client: httpx.Client) -> None:
    response = client.post("/api/v1/jobs", json=job_body(model="http://169.254.169.254/latest"))
    assert response.status_code == 422


def test_target_modules_the_model_lacks_are_named(client: httpx.Client) -> None:
    response = client.post("/api/v1/jobs", json=job_body(method_config={"target_modules": ["q_proj", "qkv_proj"]}))
    assert _locs(response) == [["body", "method_config", "target_modules"]]
    assert "qkv_proj" in response.json()["detail"][0]["msg"]


def test_an_unknown_job_is_404(client: httpx.Client) -> None:
    assert client.get("/api/v1/jobs/does-not-exist").status_code == 404
    assert client.get("/api/v1/jobs/does-not-exist/adapter").status_code == 404


def test_every_method_has_validated_options(client: httpx.Client) -> None:
    body = job_body(method="prompt")
    body["method_config"] = {"init": "text"}
    response = client.post("/api/v1/jobs", json=body)
    assert response.status_code == 422
    assert "init_text is required" in response.text


@pytest.mark.parametrize(
    ("method", "options", "hyperparameters", "loc", "says"),
    [
        # The demo model's hidden size is 256 and its limit 512 positions.
        ("adapters", {"reduction_factor": 512}, {}, ["method_config", "reduction_factor"], "hidden size 256"),
        ("adapters", {"config": "lora"}, {}, ["method_config", "config"], "houlsby"),
        ("galore", {"rank": 1024}, {}, ["method_config", "rank"], "hidden size 256"),
        ("galore", {"target_modules": ["embed_tokens"]}, {}, ["method_config", "target_modules"], "no module named"),
        ("qlora", {"quant_type": "int3"}, {}, ["method_config", "quant_type"], "nf4"),
        ("qlora", {"optimizer": "sgd"}, {}, ["method_config", "optimizer"], "paged_adamw_8bit"),
        ("full", {"optimizer": "lion"}, {}, ["method_config", "optimizer"], "adafactor"),
        # Every method but GaLore (its own GaLoreAdamW) takes the plan's optimiser, from the same choices.
        ("lora", {"optimizer": "lion"}, {}, ["method_config", "optimizer"], "adafactor"),
        ("prefix", {"optimizer": "paged_adamw_8bit"}, {}, ["method_config", "optimizer"], "adafactor"),
        ("galore", {"optimizer": "adamw"}, {}, ["method_config", "optimizer"], "Extra inputs"),
        ("prompt", {"num_virtual_tokens": 100}, {"seq_len": 480}, ["method_config", "num_virtual_tokens"],
         "at most 32 virtual tokens"),
        ("prefix", {"num_virtual_tokens": 64}, {"seq_len": 500}, ["method_config", "num_virtual_tokens"],
         "limit of 512"),
    ],
)
def test_method_options_the_model_cannot_take_are_refused_before_queueing(
    client: httpx.Client, method: str, options: dict, hyperparameters: dict, loc: list[str], says: str
) -> None:
    before = _count(client)
    body = job_body(method=method, hyperparameters=hyperparameters)
    body["method_config"] = options
    response = client.post("/api/v1/jobs", json=body)
    locs = _locs(response)
    assert locs and locs[0][-len(loc):] == loc, locs
    assert says in response.text
    assert _count(client) == before


def test_prefix_tuning_with_gradient_checkpointing_is_refused_with_a_reason(client: httpx.Client) -> None:
    body = job_body(method="prefix", hyperparameters={"gradient_checkpointing": True})
    body["method_config"] = {"num_virtual_tokens": 8}
    response = client.post("/api/v1/jobs", json=body)
    assert _locs(response) == [["body", "hyperparameters", "gradient_checkpointing"]]
    assert "prompt tuning or LoRA" in response.json()["detail"][0]["msg"]


def test_freezing_more_layers_than_the_model_has_names_trainable_layers(client: httpx.Client) -> None:
    body = job_body(method="freeze")
    body["method_config"] = {"trainable_layers": 99}
    assert _locs(client.post("/api/v1/jobs", json=body)) == [["body", "method_config", "trainable_layers"]]


def test_a_huge_offset_is_a_422_not_a_database_overflow(client: httpx.Client) -> None:
    response = client.get("/api/v1/jobs", params={"offset": 71928543327608362762240})
    assert response.status_code == 422
    assert client.get("/jobs", params={"page": 10**30}).status_code == 200


def test_holding_out_every_row_for_evaluation_names_eval_count(client: httpx.Client) -> None:
    before = _count(client)
    rows = next(d["rows"] for d in client.get("/api/v1/datasets").json()["data"] if d["id"] == "demo")
    response = client.post("/api/v1/jobs", json=job_body(hyperparameters={"eval_count": rows}))
    assert _locs(response) == [["body", "hyperparameters", "eval_count"]]
    assert f"the dataset has {rows} rows" in response.text
    assert _count(client) == before


def test_padding_free_batches_for_prompt_tuning_are_refused_with_a_reason(client: httpx.Client) -> None:
    before = _count(client)
    body = job_body(method="prompt", hyperparameters={"batching": "padding_free"})
    body["method_config"] = {"num_virtual_tokens": 8}
    response = client.post("/api/v1/jobs", json=body)
    assert _locs(response) == [["body", "hyperparameters", "batching"]]
    assert "prepends its virtual tokens" in response.json()["detail"][0]["msg"]
    assert _count(client) == before


def test_the_form_offers_each_batching_and_refuses_padding_free_prompt_tuning_beside_the_field(
        client: httpx.Client) -> None:
    form = client.get("/jobs/new").text
    assert all(f'<option value="{b}"' in form for b in ("grouped", "padding_free", "padded"))
    before = _count(client)
    response = client.post("/jobs", data={"model": "demo", "dataset": "demo", "method": "prompt",
                                          "num_virtual_tokens": "8", "batching": "padding_free"})
    assert response.status_code == 422
    assert 'id="batching" name="batching" aria-invalid="true"' in response.text
    assert "prepends its virtual tokens" in response.text
    assert _count(client) == before


def test_warmup_longer_than_an_epoch_based_run_names_warmup_steps(client: httpx.Client) -> None:
    """The demo's 400 rows at batch 8 are 50 steps an epoch: 80 warm-up steps would never reach the peak."""
    body = job_body(hyperparameters={"max_steps": None, "epochs": 1, "warmup_steps": 80})
    response = client.post("/api/v1/jobs", json=body)
    assert _locs(response) == [["body", "hyperparameters", "warmup_steps"]] and "50 steps" in response.text


def test_the_form_marks_the_field_an_eval_setting_conflict_is_about(client: httpx.Client) -> None:
    """A check across fields (eval_every with no held-out rows) is shown at eval_every, not only in the banner."""
    response = client.post("/jobs", data={"model": "demo", "dataset": "demo", "method": "lora", "eval_every": "5"})
    assert response.status_code == 422
    assert 'id="eval_every" name="eval_every" type="number"' in response.text
    marked = response.text.split('id="eval_every"', 1)[1].split(">", 1)[0]
    assert 'aria-invalid="true"' in marked and "eval_every needs held-out rows" in response.text
