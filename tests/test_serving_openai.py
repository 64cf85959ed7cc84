"""The inference process behind the OpenAI-compatible API (issue 15, acceptance 1, 3 and 5), with real processes.

A stack of its own: Redis, a Celery worker, the API and `tunedeck serve` (python -m worker.serve). Two
LoRA jobs train on the demo model first (a few steps each, different targets and seeds, so their
adapters answer differently); the official `openai` package then talks to the stack with an API token.
The demo model's words are noise, which is what makes an exact comparison meaningful: any difference in
the prompt, the adapter or the decoding shows.
"""
from __future__ import annotations

import io
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers.api import job_body, read_events
from tests.helpers.load_adapter import run_readme_snippet
from tests.helpers.stack import ADMIN_TOKEN, Stack, running_stack, wait_until

openai = pytest.importorskip("openai")

pytestmark = pytest.mark.integration

QUESTION = "Name three colours."


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    with running_stack(tmp_path_factory.mktemp("serving")) as stack:
        stack.start_serve()
        jobs = []
        with stack.client() as client:
            for seed, targets in ((1, "attention"), (2, "minimal")):
                body = job_body(hyperparameters={"max_steps": 6, "seed": seed, "checkpoint_every": 3},
                                method_config={"target_modules": targets})
                created = client.post("/api/v1/jobs", json=body)
                assert created.status_code == 201, created.text
                jobs.append(created.json()["id"])
            for job_id in jobs:
                assert read_events(client, job_id)[-1]["data"]["status"] == "succeeded", stack.log_tails()
        yield {"stack": stack, "jobs": jobs, "ids": [f"ft:demo:{job_id}" for job_id in jobs]}


def _openai(stack: Stack, **kwargs: Any) -> Any:
    return openai.OpenAI(base_url=f"{stack.base_url}/v1", api_key=ADMIN_TOKEN, max_retries=0, **kwargs)


def _ask(client: Any, model: str, stream: bool = False, **kwargs: Any) -> str:
    args = {"model": model, "messages": [{"role": "user", "content": QUESTION}], "temperature": 0,
            "max_tokens": 64, **kwargs}
    if not stream:
        return client.chat.completions.create(**args).choices[0].message.content
    chunks = client.chat.completions.create(stream=True, **args)
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def _download(stack: Stack, job_id: str) -> Path:
    folder = stack.data_dir / f"download-{job_id}"
    if not folder.is_dir():
        with stack.client() as client:
            response = client.get(f"/api/v1/jobs/{job_id}/adapter")
        assert response.status_code == 200
        zipfile.ZipFile(io.BytesIO(response.content)).extractall(folder)
    return folder


def test_models_lists_the_base_each_finished_job_and_its_checkpoints(served: dict[str, Any]) -> None:
    listed = {m.id: m for m in _openai(served["stack"]).models.list()}
    assert "demo" in listed and listed["demo"].object == "model"
    for model in served["ids"]:
        assert model in listed and f"{model}:ckpt-3" in listed
    assert _openai(served["stack"]).models.retrieve(served["ids"][0]).id == served["ids"][0]


def test_a_chat_completion_is_the_text_stock_peft_generates_from_the_download(served: dict[str, Any]) -> None:
    """Acceptance 1: greedy, streamed and not, equal to the README's loading example in a fresh process."""
    stack, job_id, model = served["stack"], served["jobs"][0], served["ids"][0]
    expected = run_readme_snippet(_download(stack, job_id), QUESTION, stack.data_dir)
    client = _openai(stack)
    assert _ask(client, model).rstrip("\n") == expected
    assert _ask(client, model, stream=True).rstrip("\n") == expected
    response = client.chat.completions.create(model=model, messages=[{"role": "user", "content": QUESTION}],
                                              temperature=0, max_tokens=5)
    assert response.choices[0].finish_reason == "length" and response.usage.completion_tokens == 5
    assert response.object == "chat.completion" and response.usage.prompt_tokens > 0


def test_two_concurrent_streams_to_two_adapters_each_get_their_own_greedy_text(served: dict[str, Any]) -> None:
    """Acceptance 3: both in flight at once (one mixed-adapter batch when they arrive together)."""
    stack = served["stack"]
    client = _openai(stack)
    alone = {model: _ask(client, model) for model in served["ids"]}
    assert alone[served["ids"][0]] != alone[served["ids"][1]]  # the two adapters answer differently
    together: dict[str, str] = {}
    barrier = threading.Barrier(len(served["ids"]))

    def stream(model: str) -> None:
        barrier.wait()
        together[model] = _ask(_openai(stack), model, stream=True)

    threads = [threading.Thread(target=stream, args=(m,)) for m in served["ids"]]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert together == alone
    log = stack.logs["serve"].read_text()
    assert "batch of 2 rows" in log, log[-2000:]


def test_a_checkpoint_and_the_base_answer_too(served: dict[str, Any]) -> None:
    client = _openai(served["stack"])
    assert _ask(client, f"{served['ids'][0]}:ckpt-3", max_tokens=8)
    assert _ask(client, "demo", max_tokens=8)
    text = client.completions.create(model=served["ids"][1], prompt="Once upon", max_tokens=6, temperature=0)
    assert text.object == "text_completion" and text.choices[0].finish_reason in ("length", "stop")


@pytest.mark.parametrize(("change", "status", "param"), [
    ({"model": "no-such-model"}, 404, "model"),
    ({"max_tokens": 0}, 400, "max_tokens"),
    ({"max_tokens": 10**7}, 400, "max_tokens"),
    ({"n": 2}, 400, "n"),
    ({"messages": [{"role": "wizard", "content": "hi"}]}, 400, "messages.[0].role"),
    ({"messages": [{"content": "hi"}]}, 400, "messages.[0].role"),
    ({"messages": []}, 400, "messages"),
    ({"messages": [{"role": "user", "content": "word " * 1200}], "max_tokens": 16}, 400, "messages"),
    ({"logprobs": True}, 400, "logprobs"),
    ({"temperature": 3}, 400, "temperature"),
])
def test_bad_requests_get_openai_errors_and_the_server_keeps_serving(served: dict[str, Any], change: dict[str, Any],
                                                                     status: int, param: str) -> None:
    """Acceptance 5: each the right OpenAI error (status, type, param), then a good request still answers."""
    stack = served["stack"]
    body = {"model": served["ids"][0], "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 4, **change}
    with httpx.Client(base_url=stack.base_url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=60) as http:
        response = http.post("/v1/chat/completions", json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error" and error["message"]
    assert _ask(_openai(stack), served["ids"][0], max_tokens=3)


def test_another_users_adapter_is_not_found_and_not_listed(served: dict[str, Any]) -> None:
    stack = served["stack"]
    stack.run_cli("create-user", "--email", "serving-eve@example.com", "--password", "password of eve")
    token = _token(stack, "serving-eve@example.com")
    eve = openai.OpenAI(base_url=f"{stack.base_url}/v1", api_key=token, max_retries=0)
    assert served["ids"][0] not in {m.id for m in eve.models.list()}
    with pytest.raises(openai.NotFoundError) as refused:
        _ask(eve, served["ids"][0])
    assert refused.value.body["code"] == "model_not_found"
    with pytest.raises(openai.AuthenticationError):
        _ask(openai.OpenAI(base_url=f"{stack.base_url}/v1", api_key="wrong", max_retries=0), "demo")


def _token(stack: Stack, email: str) -> str:
    import subprocess
    import sys

    from tests.helpers.stack import ROOT

    done = subprocess.run([sys.executable, "-m", "app.cli", "create-token", "--email", email], env=stack.env,
                          cwd=ROOT, capture_output=True, text=True, timeout=60, check=True)
    return done.stdout.strip().splitlines()[-1]


def test_killing_the_inference_process_mid_stream_gives_the_client_an_error_and_a_new_one_serves(
        served: dict[str, Any]) -> None:
    """The stream ends with an error the SDK raises (not a hang), training is untouched, a restart serves."""
    stack = served["stack"]
    client = _openai(stack, timeout=60)
    chunks = client.chat.completions.create(model=served["ids"][0], stream=True, temperature=0, max_tokens=400,
                                            messages=[{"role": "user", "content": QUESTION}])
    started = time.monotonic()
    with pytest.raises(openai.APIError) as failed:
        for index, _chunk in enumerate(chunks):
            if index == 3:
                stack.stop("serve", sig=9)
    assert "stopped" in str(failed.value) and time.monotonic() - started < 30
    with httpx.Client(base_url=stack.base_url, timeout=10) as http:
        assert http.get("/healthz").status_code == 200
    with pytest.raises(openai.APIStatusError) as refused:
        _ask(client, served["ids"][0], max_tokens=3)
    assert refused.value.status_code == 503 and "tunedeck serve" in str(refused.value)
    stack.start_serve()
    assert _ask(client, served["ids"][0], max_tokens=3)


def test_the_workers_api_reports_the_inference_process_memory(served: dict[str, Any]) -> None:
    stack = served["stack"]
    with stack.client() as client:
        inference = wait_until(lambda: client.get("/api/v1/workers").json()["inference"], 30, "no heartbeat")
        page = client.get("/workers")
    assert inference[0]["rss_bytes"] > 50 * 2**20 and inference[0]["device"] == "cpu"
    assert 'id="inference"' in page.text and f'data-server="{inference[0]["name"]}"' in page.text


@pytest.fixture(scope="module")
def standalone_jobs(served: dict[str, Any]) -> dict[str, str]:
    """A prompt-tuning, a bottleneck-adapter and a full fine-tuning job: models that are not LoRA adapters."""
    stack, jobs = served["stack"], {}
    with stack.client() as client:
        for method in ("prompt", "adapters", "full"):
            body = {**job_body(method=method, hyperparameters={"max_steps": 3}), "method_config": {}}
            created = client.post("/api/v1/jobs", json=body)
            assert created.status_code == 201, created.text
            jobs[method] = created.json()["id"]
        for job_id in jobs.values():
            assert read_events(client, job_id)[-1]["data"]["status"] == "succeeded", stack.log_tails()
    return jobs


@pytest.mark.parametrize("method", ["prompt", "adapters", "full"])
def test_prompt_bottleneck_and_full_models_are_served_as_tunedeck_generate_answers(
        served: dict[str, Any], standalone_jobs: dict[str, str], method: str) -> None:
    """Each loaded whole (its own copy of the base), answering what `tunedeck generate` answers."""
    from worker.generate import generate_text

    stack, job_id = served["stack"], standalone_jobs[method]
    expected = generate_text(str(_download(stack, job_id)), str(stack.data_dir / "models" / "demo"), QUESTION,
                             max_new_tokens=12)
    assert _ask(_openai(stack), f"ft:demo:{job_id}", max_tokens=12) == expected


def test_many_concurrent_requests_all_answer_while_healthz_stays_quick(served: dict[str, Any]) -> None:
    stack, models = served["stack"], served["ids"]
    answers: dict[int, str] = {}

    def ask(index: int) -> None:
        answers[index] = _ask(_openai(stack, timeout=120), models[index % 2], stream=index % 2 == 0, max_tokens=24)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(12)]
    for thread in threads:
        thread.start()
    slowest = 0.0
    with httpx.Client(base_url=stack.base_url, timeout=10) as http:
        while any(t.is_alive() for t in threads):
            started = time.perf_counter()
            assert http.get("/healthz").status_code == 200
            slowest = max(slowest, time.perf_counter() - started)
            time.sleep(0.1)
    assert len(answers) == 12 and all(answers.values())
    assert answers[0] == answers[2] and answers[1] == answers[3]  # the same greedy text, batched or not
    assert slowest < 1.0, slowest


def test_a_request_nobody_answers_ends_at_its_timeout(served: dict[str, Any]) -> None:
    """The API's reader gives up at the request's deadline (TUNEDECK_SERVE_TIMEOUT_SECONDS) with a 504."""
    import asyncio

    from redis.asyncio import Redis

    from app.serving.client import InferenceFailed, replies

    async def wait_for_nothing() -> InferenceFailed:
        redis = Redis.from_url(served["stack"].redis_url)
        try:
            async for _ in replies(redis, "never-sent", time.time() + 1.5):
                pass
        except InferenceFailed as exc:
            return exc
        finally:
            await redis.aclose()
        raise AssertionError("no timeout")

    started = time.monotonic()
    failed = asyncio.run(wait_for_nothing())
    assert failed.status == 504 and "timeout" in failed.message and time.monotonic() - started < 5


def test_a_stop_sequence_cuts_the_answer_before_it(served: dict[str, Any]) -> None:
    client, model = _openai(served["stack"]), served["ids"][1]
    full = _ask(client, model, max_tokens=24)
    stop = full[3:5]
    assert len(stop) == 2 and stop.strip(), full
    for stream in (False, True):
        assert _ask(client, model, stream=stream, max_tokens=24, stop=[stop]) == full[:full.find(stop)]
    answer = client.chat.completions.create(model=model, messages=[{"role": "user", "content": QUESTION}],
                                            temperature=0, max_tokens=24, stop=stop)
    assert answer.choices[0].finish_reason == "stop"


def test_beyond_max_adapters_the_least_recently_used_adapter_is_evicted_and_comes_back(served: dict[str, Any]) -> None:
    """TUNEDECK_SERVE_MAX_ADAPTERS = 1: loading a second adapter evicts the first; asking for it again reloads it."""
    from app.serving.protocol import ServedModel
    from worker.serve.models import ModelHolder

    stack = served["stack"]
    base = str(stack.data_dir / "models" / "demo")
    holder = ModelHolder("cpu", max_loaded=1)
    models = [ServedModel(id=model, kind="adapter", base_path=base, path=str(_download(stack, job)),
                          tokenizer_path=base) for model, job in zip(served["ids"], served["jobs"])]
    first = holder.slot(models[0])
    holder.slot(models[1])
    assert holder.holding() == {"bases": [base], "standalone": [], "adapters": [served["ids"][1]]}
    assert first.adapter not in holder.slot(models[1]).model.peft_config  # unloaded from peft, not only forgotten
    holder.slot(models[0])
    assert holder.holding()["adapters"] == [served["ids"][0]]
