"""Fine-tuning visibly works (issue 12): LoRA on SmolLM2-135M-Instruct, run by a real worker through a
real Redis (created through the OpenAI-compatible API, issue 16), learns the built-in extraction task; held-out exact match goes from the base model's (0 %)
to about 80 % (README), and the samples are the readable JSON answers.

A stack of its own: linking SmolLM2 into the shared stack would make it every other test's default model.
"""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.demo_extraction import EXTRACTION_DATASET_ID, extraction_rows
from app.methods import get_spec
from tests.helpers.api import read_events
from tests.helpers.load_adapter import run_readme_snippet
from tests.helpers.prompts import link_model
from tests.helpers.stack import Stack, running_stack
from tests.helpers.trainer import REPO_ROOT

pytestmark = pytest.mark.integration

STEPS, EVERY, HELD_OUT, LEARNING_RATE = 30, 15, 20, 5e-4  # shorter than the form's 100 steps at 2e-4, for the suite


@pytest.fixture(scope="module")
def learnt(tmp_path_factory: pytest.TempPathFactory, smollm2: Path) -> Iterator[dict[str, Any]]:
    with running_stack(tmp_path_factory.mktemp("smollm2-stack")) as stack:
        link_model(stack.data_dir, smollm2)
        stack.start_serve()  # issue 15: the playground and /v1 answer with this run's adapter
        yield {**_run(stack), "stack": stack}


@pytest.fixture(scope="module")
def stack(learnt: dict[str, Any]) -> Stack:
    """This module's stack, for the browser `page` fixture (logged in on it)."""
    return learnt["stack"]


def _polled(sdk: Any, job_id: str, timeout: float = 900) -> Any:
    """The job as the SDK reads it once it has ended, polled as an OpenAI script polls."""
    deadline = time.monotonic() + timeout
    while (done := sdk.fine_tuning.jobs.retrieve(job_id)).status not in ("succeeded", "failed", "cancelled"):
        assert time.monotonic() < deadline, done
        time.sleep(2)
    return done


def _run(stack: Stack) -> dict[str, Any]:
    """The finished job, its events, and its adapter download unzipped.

    The job is made as an OpenAI script makes one (issue 16): the task's rows uploaded as a chat JSONL with
    `client.files.create`, the job created with `client.fine_tuning.jobs.create` and polled to its end.
    The rest at its defaults, as the form launches it: LoRA r 8 on attention, micro-batch 1, seq_len 512."""
    import openai

    from tests.helpers.stack import ADMIN_TOKEN

    sdk = openai.OpenAI(base_url=f"{stack.base_url}/v1", api_key=ADMIN_TOKEN, max_retries=0)
    chat = "".join(json.dumps({"messages": [{"role": "user", "content": f"{r['instruction']}\n\n{r['input']}"},
                                            {"role": "assistant", "content": r["output"]}]}) + "\n"
                   for r in extraction_rows())
    started = time.monotonic()
    upload = sdk.files.create(file=("extraction.jsonl", io.BytesIO(chat.encode())), purpose="fine-tune")
    created = sdk.fine_tuning.jobs.create(
        model="smollm2-135m-instruct", training_file=upload.id,
        method={"type": "supervised", "supervised": {"hyperparameters": {
            "batch_size": 1, "learning_rate_multiplier": LEARNING_RATE / get_spec("lora").learning_rate}}},
        extra_body={"tunedeck": {"hyperparameters": {"max_steps": STEPS, "eval_count": HELD_OUT, "eval_every": EVERY,
                                                     "sample_every": EVERY, "checkpoint_every": EVERY}}})
    done = _polled(sdk, created.id)
    job_id = created.id
    with stack.client() as client:
        events = read_events(client, job_id, timeout=900)
        wall_seconds = time.monotonic() - started
        job = client.get(f"/api/v1/jobs/{job_id}").json()
        download = client.get(f"/api/v1/jobs/{job_id}/adapter")
    adapter = stack.data_dir / "downloaded-adapter"
    if download.status_code == 200:
        zipfile.ZipFile(io.BytesIO(download.content)).extractall(adapter)
    return {"job": job, "events": events, "wall_seconds": wall_seconds, "adapter": adapter,
            "cwd": stack.data_dir, "openai_job": done}


def test_the_job_succeeds_with_the_chat_template(learnt: dict[str, Any]) -> None:
    job = learnt["job"]
    assert job["status"] == "succeeded", job["error"]
    assert job["hyperparameters"]["prompt_format"] == "chat_template"


def test_held_out_exact_match_rises_from_the_base_models_to_a_clearly_higher_value(learnt: dict[str, Any]) -> None:
    summary = learnt["job"]["summary"]
    points = [e["data"] for e in learnt["events"] if e["event"] == "metric" and "eval_exact_match" in e["data"]]
    assert [p["step"] for p in points] == list(range(EVERY, STEPS + 1, EVERY))
    before, after = summary["eval_before"]["eval_exact_match"], summary["eval_exact_match"]
    print(f"\nSmolLM2 LoRA on {EXTRACTION_DATASET_ID}: exact match {before:.0%} -> "
          + " -> ".join(f"{p['eval_exact_match']:.0%} (step {p['step']})" for p in points)
          + f"; {learnt['wall_seconds']:.0f} s from submission, "
          f"{points[-1]['elapsed_seconds']:.0f} s of training")
    # The bar leaves room for another CPU's rounding (measured here: see README, "A first job that visibly learns").
    assert before <= 0.2, before
    assert after >= 0.6 and max(p["eval_exact_match"] for p in points) >= 0.75, points
    assert after == points[-1]["eval_exact_match"]


def _final_samples(learnt: dict[str, Any]) -> list[dict[str, Any]]:
    samples = [e["data"]["sample"] for e in learnt["events"] if e["event"] == "log" and "sample" in e["data"]]
    assert samples
    return [s for s in samples if s["step"] == max(s["step"] for s in samples)]


def test_the_samples_are_the_json_answers_the_task_asks_for(learnt: dict[str, Any]) -> None:
    samples = _final_samples(learnt)
    answers = [json.loads(sample["completion"]) for sample in samples]  # readable text: the JSON shape, not noise
    assert all(list(answer) == ["name", "city", "job"] for answer in answers), answers
    assert any(answer["name"] in sample["prompt"] for answer, sample in zip(answers, samples)), samples


def test_the_adapter_loaded_as_the_readme_shows_gives_the_trained_answer(learnt: dict[str, Any]) -> None:
    """Acceptance 3: stock transformers + peft in a fresh process, the prompt from the recorded chat template."""
    rows = {row["input"]: row for row in extraction_rows()}
    answered = [(rows[sentence], sample) for sample in _final_samples(learnt)
                for sentence in rows if sentence in sample["prompt"]]
    right = [(row, sample) for row, sample in answered if sample["completion"].strip() == row["output"]]
    assert right, answered  # a held-out row the trained model answers exactly
    row, _ = right[0]
    question = f"{row['instruction']}\n\n{row['input']}"  # how an instruction row becomes the user's turn
    assert run_readme_snippet(learnt["adapter"], question, learnt["cwd"]).strip() == row["output"]


def test_the_adapter_records_its_prompt_format_and_the_models_chat_template(
        learnt: dict[str, Any], smollm2: Path) -> None:
    adapter = learnt["adapter"]
    record = json.loads((adapter / "tunedeck_training.json").read_text(encoding="utf-8"))
    template = (smollm2 / "chat_template.jinja").read_text(encoding="utf-8")
    assert record["prompt_format"] == "chat_template"  # resolved: the job asked for none
    assert record["config"]["hyperparameters"]["prompt_format"] == "chat_template"
    assert record["chat_template"] == template
    assert (adapter / "chat_template.jinja").read_text(encoding="utf-8") == template


def test_tunedeck_generate_answers_a_user_message_through_the_recorded_format(learnt: dict[str, Any]) -> None:
    rows = {row["input"]: row for row in extraction_rows()}
    sample = next(s for s in _final_samples(learnt) for sentence in rows if sentence in s["prompt"])
    row = next(rows[sentence] for sentence in rows if sentence in sample["prompt"])
    env = {**os.environ, "TUNEDECK_DATA_DIR": str(learnt["cwd"]), "HF_HUB_OFFLINE": "1", "PYTHONIOENCODING": "utf-8"}
    proc = subprocess.run(
        [sys.executable, "-m", "app.cli", "generate", "--adapter", str(learnt["adapter"]),
         "--prompt", f"{row['instruction']}\n\n{row['input']}", "--max-new-tokens", "48"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, encoding="utf-8", timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == sample["completion"].strip()  # what the trainer's own greedy sample said


# -- Issue 15: the trained adapter served (one base, many adapters) and tried in the playground ---------------

@pytest.fixture(scope="module")
def second_job(learnt: dict[str, Any]) -> str:
    """A second, short LoRA job on SmolLM2 (other targets, rank 4): a second adapter of a second job."""
    body = {"model": "smollm2-135m-instruct", "dataset": EXTRACTION_DATASET_ID, "method": "lora",
            "method_config": {"r": 4, "target_modules": "minimal"},
            "hyperparameters": {"max_steps": 3, "learning_rate": LEARNING_RATE, "seq_len": 256}}
    with learnt["stack"].client() as client:
        created = client.post("/api/v1/jobs", json=body)
        assert created.status_code == 201, created.text
        assert read_events(client, created.json()["id"], timeout=600)[-1]["data"]["status"] == "succeeded"
    return str(created.json()["id"])


def _rss(stack: Stack) -> int:
    with stack.client() as client:
        return int(client.get("/api/v1/workers").json()["inference"][0]["rss_bytes"])


def test_one_inference_process_holds_the_base_once_for_two_adapters_of_two_jobs(
        learnt: dict[str, Any], second_job: str) -> None:
    """Acceptance 2: resident memory grows by about the adapters' size, not by a base per adapter."""
    import openai

    from tests.helpers.stack import ADMIN_TOKEN

    stack = learnt["stack"]
    client = openai.OpenAI(base_url=f"{stack.base_url}/v1", api_key=ADMIN_TOKEN, max_retries=0)

    def ask(model: str) -> str:
        return client.chat.completions.create(model=model, temperature=0, max_tokens=8,
                                              messages=[{"role": "user", "content": "Hello"}]).choices[0].message.content

    ask("smollm2-135m-instruct")  # the base loaded and one generation's buffers made
    time.sleep(2.5)  # the next heartbeats carry the memory after it
    with_base = _rss(stack)
    adapters = [f"ft:smollm2-135m-instruct:{learnt['job']['id']}", f"ft:smollm2-135m-instruct:{second_job}"]
    for model in adapters:
        ask(model)
    time.sleep(2.5)
    with_adapters = _rss(stack)
    with stack.client() as api:
        held = api.get("/api/v1/workers").json()["inference"][0]
    assert set(adapters) <= set(held["adapters"]) and len(held["bases"]) == 1
    base_bytes = 134_515_008 * 4  # SmolLM2-135M's parameters in float32
    adapter_bytes = sum((stack.data_dir / "jobs" / job / "artifact" / "adapter_model.safetensors").stat().st_size
                        for job in (learnt["job"]["id"], second_job))
    growth = with_adapters - with_base
    print(f"\ninference process RSS: {with_base / 2**20:.0f} MiB with the base, {with_adapters / 2**20:.0f} MiB with "
          f"two adapters (+{growth / 2**20:.1f} MiB; adapter files {adapter_bytes / 2**20:.1f} MiB; "
          f"a base is {base_bytes / 2**20:.0f} MiB)")
    assert growth < 0.15 * base_bytes, growth


def test_the_playground_streams_base_adapter_and_checkpoint_side_by_side(page: Any, learnt: dict[str, Any]) -> None:
    """Acceptance 4: three columns stream in Chromium; the adapter gives the trained answer, the base does not."""
    from playwright.sync_api import expect

    rows = {row["input"]: row for row in extraction_rows()}
    job_id = learnt["job"]["id"]
    page.goto(f"/jobs/{job_id}")
    page.locator("#try-it").click()
    page.wait_for_url("**/playground?model=*")
    model = f"ft:smollm2-135m-instruct:{job_id}"
    expect(page.locator("#pg-column-0")).to_have_value("smollm2-135m-instruct")
    expect(page.locator("#pg-column-1")).to_have_value(model)
    expect(page.locator("#pg-column-2")).to_have_value(f"{model}:ckpt-{EVERY}")
    prompts = page.locator("#held-out-prompts button")
    expect(prompts.first).to_be_visible()
    # A held-out prompt the trained model answers exactly (the samples say which).
    right = [(rows[s], sample) for sample in _final_samples(learnt) for s in rows
             if s in sample["prompt"] and sample["completion"].strip() == rows[s]["output"]]
    assert right
    row = right[0][0]
    texts = [prompts.nth(i).get_attribute("data-text") for i in range(prompts.count())]
    index = texts.index(f"{row['instruction']}\n\n{row['input']}")
    prompts.nth(index).click()
    page.get_by_label("Max tokens").fill("48")
    page.locator("#pg-run").click()
    columns = page.locator("#columns .column")
    expect(columns).to_have_count(3)
    for i in range(3):
        expect(columns.nth(i).locator(".stats [data-finish]")).to_be_visible(timeout=120_000)
    answers = [columns.nth(i).locator(".answer").inner_text() for i in range(3)]
    assert answers[1].strip() == row["output"], answers
    assert answers[0].strip() != row["output"] and answers[0].strip(), answers
    assert float(columns.nth(1).locator(".tps").get_attribute("data-tps")) > 0


def test_the_fine_tuned_model_gives_the_trained_answer_through_the_openai_client(learnt: dict[str, Any]) -> None:
    """Issue 16, acceptance 1: `chat.completions.create(model=job.fine_tuned_model, ...)` answers as trained."""
    import openai

    from tests.helpers.stack import ADMIN_TOKEN

    done = learnt["openai_job"]
    assert done.status == "succeeded" and done.fine_tuned_model == f"ft:smollm2-135m-instruct:{done.id}"
    rows = {row["input"]: row for row in extraction_rows()}
    row = next(rows[s] for sample in _final_samples(learnt) for s in rows
               if s in sample["prompt"] and sample["completion"].strip() == rows[s]["output"])
    sdk = openai.OpenAI(base_url=f"{learnt['stack'].base_url}/v1", api_key=ADMIN_TOKEN, max_retries=0)
    answer = sdk.chat.completions.create(model=done.fine_tuned_model, temperature=0, max_tokens=64, messages=[
        {"role": "user", "content": f"{row['instruction']}\n\n{row['input']}"}])
    assert answer.choices[0].message.content.strip() == row["output"]
    # The rest of an OpenAI script's tour of the same job: its events paged with `after`, its checkpoints.
    page, seen = sdk.fine_tuning.jobs.list_events(done.id, limit=20), []
    while True:
        seen += page.data
        if not page.has_more:
            break
        page = sdk.fine_tuning.jobs.list_events(done.id, limit=20, after=page.data[-1].id)
    assert sorted(e.data["step"] for e in seen if e.type == "metrics") == list(range(1, STEPS + 1))
    checkpoints = sdk.fine_tuning.jobs.checkpoints.list(done.id).data
    assert [c.step_number for c in checkpoints] == [STEPS, EVERY] and checkpoints[0].metrics.valid_loss is not None


# -- Issue 16: preference training (DPO) on the real model ---------------------------------------------------

DPO_STEPS, DPO_EVERY = 10, 5


@pytest.fixture(scope="module")
def dpo_run(learnt: dict[str, Any]) -> dict[str, Any]:
    """The built-in preference pairs (compact JSON preferred to prose) as OpenAI's preference rows, trained with
    `method={"type": "dpo"}` through the official client: LoRA, the reference the base with the adapter off."""
    import openai

    from app.demo_extraction import preference_rows
    from tests.helpers.stack import ADMIN_TOKEN

    stack = learnt["stack"]
    sdk = openai.OpenAI(base_url=f"{stack.base_url}/v1", api_key=ADMIN_TOKEN, max_retries=0)
    rows = "".join(json.dumps({"input": {"messages": [{"role": "user", "content": r["prompt"]}]},
                               "preferred_output": [{"role": "assistant", "content": r["chosen"]}],
                               "non_preferred_output": [{"role": "assistant", "content": r["rejected"]}]}) + "\n"
                   for r in preference_rows())
    upload = sdk.files.create(file=("prefer.jsonl", io.BytesIO(rows.encode())), purpose="fine-tune")
    created = sdk.fine_tuning.jobs.create(
        model="smollm2-135m-instruct", training_file=upload.id,
        method={"type": "dpo", "dpo": {"hyperparameters": {
            "beta": 0.1, "batch_size": 2, "learning_rate_multiplier": LEARNING_RATE / get_spec("lora").learning_rate}}},
        extra_body={"tunedeck": {"hyperparameters": {"max_steps": DPO_STEPS, "eval_count": HELD_OUT,
                                                     "eval_every": DPO_EVERY, "seq_len": 256}}})
    done = _polled(sdk, created.id)
    with stack.client() as client:
        events = read_events(client, created.id, timeout=60)
        job = client.get(f"/api/v1/jobs/{created.id}").json()
        download = client.get(f"/api/v1/jobs/{created.id}/adapter")
    adapter = stack.data_dir / "downloaded-dpo-adapter"
    zipfile.ZipFile(io.BytesIO(download.content)).extractall(adapter)
    return {"done": done, "job": job, "events": events, "adapter": adapter}


def test_dpo_raises_the_held_out_reward_accuracy_from_zero_past_80_percent(dpo_run: dict[str, Any]) -> None:
    """Issue 16, acceptance 3, on SmolLM2: before training the model is its own reference (accuracy 0)."""
    assert dpo_run["done"].status == "succeeded" and dpo_run["done"].method.type == "dpo", dpo_run["done"].error
    summary = dpo_run["job"]["summary"]
    points = [e["data"] for e in dpo_run["events"] if e["event"] == "metric" and "eval_reward_accuracy" in e["data"]]
    assert [p["step"] for p in points] == list(range(DPO_EVERY, DPO_STEPS + 1, DPO_EVERY))
    before, after = summary["eval_before"]["eval_reward_accuracy"], summary["eval_reward_accuracy"]
    print(f"\nSmolLM2 DPO on the preference pairs: held-out reward accuracy {before:.0%} -> "
          + " -> ".join(f"{p['eval_reward_accuracy']:.0%} (step {p['step']})" for p in points)
          + f"; reward margin {summary['eval_reward_margin']:.3f}")
    assert before == 0.0 and after > 0.8 and summary["eval_reward_margin"] > 0


def test_the_dpo_adapter_loads_in_stock_peft(dpo_run: dict[str, Any], learnt: dict[str, Any]) -> None:
    answer = run_readme_snippet(dpo_run["adapter"], "Extract the person's name, city and job as JSON.\n\n"
                                                    "Maria Lopez lives in Porto and works as a nurse.", learnt["cwd"])
    assert answer.strip()
