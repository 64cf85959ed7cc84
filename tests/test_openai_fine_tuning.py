"""OpenAI's Files and fine-tuning jobs API, driven by the official `openai` package (issue 16, acceptance 1 and 4).

A stack of its own (Redis, a worker, the API, `tunedeck serve`) on the demo model: a script that
imports only `openai` uploads a chat JSONL, creates a supervised job, polls it to `succeeded`, pages
through its events with `after`, lists its checkpoints and asks its `fine_tuned_model` for a chat
completion; a second job is cancelled, a third paused and resumed; `jobs.list(limit=2)` pages with
`has_more`. Every SDK call must parse. That the answer is the *trained* one is shown on the real model
(tests/test_smollm2_learns.py, whose job is created the same way).
"""
from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.helpers.stack import ADMIN_TOKEN, Stack, running_stack, wait_until

openai = pytest.importorskip("openai")

pytestmark = pytest.mark.integration

ROWS = [{"messages": [{"role": "system", "content": "Answer in one word."},
                      {"role": "user", "content": f"What colour is thing number {i}?"},
                      {"role": "assistant", "content": ["red", "green", "blue"][i % 3]}]} for i in range(24)]


def _jsonl(rows: list[Any]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("openai-ft")) as running:
        running.start_serve()
        yield running


@pytest.fixture(scope="module")
def client(stack: Stack) -> Any:
    return openai.OpenAI(base_url=f"{stack.base_url}/v1", api_key=ADMIN_TOKEN, max_retries=0)


def _wait(client: Any, job_id: str, statuses: set[str], timeout: float = 240) -> Any:
    return wait_until(lambda: (j := client.fine_tuning.jobs.retrieve(job_id)).status in statuses and j, timeout,
                      f"job {job_id} never reached {statuses}", interval=0.5)


@pytest.fixture(scope="module")
def finished(client: Any) -> dict[str, Any]:
    training = client.files.create(file=("colours.jsonl", io.BytesIO(_jsonl(ROWS))), purpose="fine-tune")
    validation = client.files.create(file=("held.jsonl", io.BytesIO(_jsonl(ROWS[:4]))), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        model="demo", training_file=training.id, validation_file=validation.id, suffix="colours", seed=7,
        metadata={"team": "search"},
        method={"type": "supervised", "supervised": {"hyperparameters": {"batch_size": 4,
                                                                         "learning_rate_multiplier": 5}}},
        extra_body={"tunedeck": {"hyperparameters": {"max_steps": 8, "checkpoint_every": 4, "seq_len": 128}}})
    done = _wait(client, job.id, {"succeeded", "failed", "cancelled"})
    return {"training": training, "validation": validation, "created": job, "done": done}


def test_a_file_is_uploaded_listed_read_back_and_is_one_of_our_datasets(client: Any, stack: Stack,
                                                                         finished: dict[str, Any]) -> None:
    training = finished["training"]
    assert training.object == "file" and training.purpose == "fine-tune" and training.status == "processed"
    assert training.filename == "colours.jsonl" and training.bytes > 0
    assert training.id in {f.id for f in client.files.list()}
    assert client.files.retrieve(training.id).id == training.id
    content = client.files.content(training.id).text.splitlines()
    assert [json.loads(line)["messages"][2]["content"] for line in content[:3]] == ["red", "green", "blue"]
    with stack.client() as api:
        assert training.id in {d["id"] for d in api.get("/api/v1/datasets").json()["data"]}


def test_a_supervised_job_runs_to_succeeded_and_its_model_answers(client: Any, stack: Stack,
                                                                  finished: dict[str, Any]) -> None:
    created, done = finished["created"], finished["done"]
    assert created.object == "fine_tuning.job" and created.status in ("queued", "running")
    assert done.status == "succeeded", done.error
    assert done.fine_tuned_model == f"ft:demo:{done.id}" and done.finished_at and done.seed == 7
    assert done.training_file == finished["training"].id and done.validation_file == finished["validation"].id
    assert done.hyperparameters.batch_size == 4 and done.hyperparameters.learning_rate_multiplier == 5
    assert done.metadata == {"team": "search"} and done.method.type == "supervised"
    extras = done.model_extra["tunedeck"]
    assert extras["method"] == "lora" and extras["plan"]["peak_bytes"] > 0
    with stack.client() as api:  # the same job, seen through our own API
        ours = api.get(f"/api/v1/jobs/{done.id}").json()
    assert ours["status"] == "succeeded" and ours["name"] == "colours" and ours["hyperparameters"]["seed"] == 7
    answer = client.chat.completions.create(model=done.fine_tuned_model, max_tokens=4, temperature=0,
                                            messages=[{"role": "user", "content": "What colour is thing number 1?"}])
    assert answer.choices[0].message.content is not None and answer.model == done.fine_tuned_model


def test_events_page_newest_first_with_after_and_carry_metrics(client: Any, finished: dict[str, Any]) -> None:
    job_id = finished["done"].id
    seen: list[Any] = []
    page = client.fine_tuning.jobs.list_events(job_id, limit=5)
    while True:
        seen += page.data
        if not page.has_more:
            break
        page = client.fine_tuning.jobs.list_events(job_id, limit=5, after=page.data[-1].id)
    assert len({e.id for e in seen}) == len(seen) > 10
    assert seen[0].message == "Job status: succeeded"  # newest first
    metrics = [e for e in seen if e.type == "metrics"]
    assert sorted(e.data["step"] for e in metrics) == list(range(1, 9))
    assert all(e.object == "fine_tuning.job.event" and e.level in ("info", "warn", "error") for e in seen)
    assert any("valid_loss" in e.data for e in metrics)  # the validation file is evaluated


def test_checkpoints_list_with_their_losses_and_each_answers(client: Any, finished: dict[str, Any]) -> None:
    done = finished["done"]
    checkpoints = client.fine_tuning.jobs.checkpoints.list(done.id).data
    assert [c.step_number for c in checkpoints] == [8, 4]
    first = checkpoints[-1]
    assert first.object == "fine_tuning.job.checkpoint" and first.fine_tuning_job_id == done.id
    assert first.metrics.train_loss is not None and first.metrics.valid_loss is not None
    assert first.fine_tuned_model_checkpoint == f"{done.fine_tuned_model}:ckpt-4"
    answer = client.chat.completions.create(model=first.fine_tuned_model_checkpoint, max_tokens=3, temperature=0,
                                            messages=[{"role": "user", "content": "hi"}])
    assert answer.choices[0].finish_reason in ("stop", "length")


def test_a_second_job_cancels_and_a_third_pauses_and_resumes_to_succeeded(client: Any,
                                                                          finished: dict[str, Any]) -> None:
    training = finished["training"].id
    long = {"tunedeck": {"hyperparameters": {"max_steps": 400, "checkpoint_every": 0, "seq_len": 128}}}
    to_cancel = client.fine_tuning.jobs.create(model="demo", training_file=training, extra_body=long)
    _wait(client, to_cancel.id, {"running"})
    assert client.fine_tuning.jobs.cancel(to_cancel.id).status == "cancelled"  # as OpenAI answers: asked is done
    wait_until(lambda: client.fine_tuning.jobs.retrieve(to_cancel.id).model_extra["tunedeck"]["status"] == "cancelled",
               30, "the running job did not stop")

    to_pause = client.fine_tuning.jobs.create(model="demo", training_file=training, extra_body={
        "tunedeck": {"hyperparameters": {"max_steps": 150, "checkpoint_every": 0, "seq_len": 128}}})
    wait_until(lambda: client.fine_tuning.jobs.retrieve(to_pause.id).model_extra["tunedeck"]["step"] >= 2, 180,
               "the job to pause never got going")
    assert client.fine_tuning.jobs.pause(to_pause.id).status == "paused"
    paused = wait_until(lambda: (j := client.fine_tuning.jobs.retrieve(to_pause.id)).model_extra["tunedeck"][
        "status"] in ("paused", "failed") and j, 60, "never paused")
    at = paused.model_extra["tunedeck"]["step"]
    assert paused.status == "paused" and 0 < at < 150
    assert client.fine_tuning.jobs.resume(to_pause.id).status == "queued"
    done = _wait(client, to_pause.id, {"succeeded", "failed"})
    assert done.status == "succeeded" and done.model_extra["tunedeck"]["step"] == 150


def test_jobs_list_pages_with_has_more_and_filters_by_metadata(client: Any, finished: dict[str, Any]) -> None:
    first = client.fine_tuning.jobs.list(limit=2)
    assert len(first.data) == 2 and first.has_more
    rest = client.fine_tuning.jobs.list(limit=2, after=first.data[-1].id)
    assert rest.data and not {j.id for j in rest.data} & {j.id for j in first.data}
    tagged = client.fine_tuning.jobs.list(metadata={"team": "search"}).data
    assert [j.id for j in tagged] == [finished["done"].id]


@pytest.mark.parametrize(("content", "line", "words"), [
    (b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\nnot json\n', 2,
     "invalid JSON"),
    (b'{"messages": [{"role": "user", "content": "hi"}, {"role": "robot", "content": "yo"}]}\n', 1,
     "messages[1].role"),
    (b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo", "weight": 0}]}\n', 1,
     "weight 0"),
])
def test_a_bad_file_is_refused_with_its_line_and_nothing_is_stored(client: Any, content: bytes, line: int,
                                                                   words: str) -> None:
    before = {f.id for f in client.files.list()}
    with pytest.raises(openai.BadRequestError) as refused:
        client.files.create(file=("bad.jsonl", io.BytesIO(content)), purpose="fine-tune")
    error = refused.value.body
    assert error["param"] == "file" and f"line {line}" in error["message"] and words in error["message"], error
    assert {f.id for f in client.files.list()} == before


@pytest.mark.parametrize(("change", "param"), [
    ({"training_file": "no-such-file"}, "training_file"),
    ({"validation_file": "no-such-file"}, "validation_file"),
    ({"model": "no-such-model"}, "model"),
    ({"hyperparameters": {"n_epochs": 0}}, "hyperparameters.n_epochs"),
    ({"method": {"type": "reinforcement"}}, "method.type"),
    ({"extra_body": {"tunedeck": {"method_config": {"r": -1}}}}, "tunedeck.method_config.r"),
    ({"extra_body": {"surprise": 1}}, "surprise"),
])
def test_bad_job_requests_get_openai_errors_naming_the_parameter(client: Any, finished: dict[str, Any],
                                                                 change: dict[str, Any], param: str) -> None:
    body = {"model": "demo", "training_file": finished["training"].id, **change}
    with pytest.raises(openai.BadRequestError) as refused:
        client.fine_tuning.jobs.create(**body)
    assert refused.value.body["param"] == param, refused.value.body


def test_purpose_other_than_fine_tune_and_another_users_file_are_refused(client: Any, stack: Stack,
                                                                          finished: dict[str, Any]) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client.files.create(file=("x.jsonl", io.BytesIO(_jsonl(ROWS[:2]))), purpose="batch")
    assert refused.value.body["param"] == "purpose"
    stack.run_cli("create-user", "--email", "ft-mallory@example.com", "--password", "password of mallory")
    import subprocess
    import sys

    from tests.helpers.stack import ROOT

    token = subprocess.run([sys.executable, "-m", "app.cli", "create-token", "--email", "ft-mallory@example.com"],
                           env=stack.env, cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()[-1]
    mallory = openai.OpenAI(base_url=f"{stack.base_url}/v1", api_key=token, max_retries=0)
    with pytest.raises(openai.NotFoundError):
        mallory.files.retrieve(finished["training"].id)
    with pytest.raises(openai.NotFoundError):
        mallory.fine_tuning.jobs.retrieve(finished["done"].id)
    assert finished["done"].id not in {j.id for j in mallory.fine_tuning.jobs.list().data}


def test_a_file_in_use_by_a_queued_job_is_not_deleted_then_is(client: Any, stack: Stack) -> None:
    upload = client.files.create(file=("tmp.jsonl", io.BytesIO(_jsonl(ROWS))), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model="demo", training_file=upload.id, extra_body={
        "tunedeck": {"hyperparameters": {"max_steps": 2, "seq_len": 128}}})
    with pytest.raises(openai.ConflictError):
        client.files.delete(upload.id)
    _wait(client, job.id, {"succeeded", "failed", "cancelled"})
    assert client.files.delete(upload.id).deleted
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(upload.id)
    with httpx.Client(base_url=stack.base_url, timeout=10) as http:
        assert http.get("/healthz").status_code == 200
    time.sleep(0)


def test_a_dpo_job_takes_openai_preference_rows_and_reports_rewards(client: Any) -> None:
    pairs = [{"input": {"messages": [{"role": "user", "content": f"Colour of thing {i}?"}]},
              "preferred_output": [{"role": "assistant", "content": ["red", "green"][i % 2]}],
              "non_preferred_output": [{"role": "assistant", "content": "I do not know."}]} for i in range(16)]
    upload = client.files.create(file=("pairs.jsonl", io.BytesIO(_jsonl(pairs))), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        model="demo", training_file=upload.id,
        method={"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.2, "batch_size": 4}}},
        extra_body={"tunedeck": {"hyperparameters": {"max_steps": 4, "seq_len": 128}}})
    assert job.method.type == "dpo" and job.hyperparameters.model_extra["beta"] == 0.2
    done = _wait(client, job.id, {"succeeded", "failed", "cancelled"})
    assert done.status == "succeeded", done.error
    metrics = [e.data for e in client.fine_tuning.jobs.list_events(job.id, limit=100).data if e.type == "metrics"]
    assert metrics and all("reward_accuracy" in m and "reward_margin" in m for m in metrics)
    with pytest.raises(openai.BadRequestError) as refused:  # supervised training cannot use preference pairs
        client.fine_tuning.jobs.create(model="demo", training_file=upload.id)
    assert refused.value.body["param"] == "training_file" and "dpo" in refused.value.body["message"]
