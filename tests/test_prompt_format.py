"""The prompt format is explicit (issue 12): chosen or resolved at submission, rendered like transformers
renders chat templates, and previewed in the new-job form token for token as the trainer encodes it
(acceptance 4), on SmolLM2 (a ChatML chat template) and the demo model (a byte tokenizer, none)."""
from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import pytest

from app.prompts import PromptFormatError
from tests.helpers.api import job_body
from tests.helpers.local_api import LocalApi
from tests.helpers.prompts import ROWS, link_model, preview_ids, upload_rows

pytestmark = pytest.mark.unit

FORMATS = (None, "chat_template", "alpaca", "plain")
SMOLLM2 = "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def models(api: LocalApi, smollm2: Path) -> dict[str, Path]:
    link_model(api.data_dir, smollm2)
    return {"demo": api.data_dir / "models" / "demo", SMOLLM2: smollm2}


@pytest.fixture(scope="module")
def datasets(api: LocalApi) -> dict[str, str]:
    return {kind: upload_rows(api.client, kind, [row]) for kind, row in ROWS.items()}


@cache
def _tokenizer(folder: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder))


def trainer_example(folder: Path, row: dict[str, Any], prompt_format: str | None, seq_len: int = 512) -> Any:
    """The row as the trainer encodes it: the job's format resolved as prepare.load_data does, then encode_rows."""
    from worker.train.data import encode_rows, prompt_format_of

    tokenizer = _tokenizer(folder)
    return encode_rows([row], tokenizer, seq_len, prompt_format_of(tokenizer, prompt_format))[0]


def _preview(api: LocalApi, model: str, dataset: str, prompt_format: str | None, seq_len: int = 512) -> str:
    params = {"model": model, "dataset": dataset, "prompt_format": prompt_format or "", "seq_len": str(seq_len)}
    response = api.client.get("/jobs/new/preview", params=params)
    assert response.status_code == 200, response.text
    return response.text


@pytest.mark.parametrize("kind", list(ROWS))
@pytest.mark.parametrize("prompt_format", FORMATS)
@pytest.mark.parametrize("model", [SMOLLM2, "demo"])
def test_the_form_preview_is_token_for_token_what_the_trainer_trains_on(
        api: LocalApi, models: dict[str, Path], datasets: dict[str, str], model: str, prompt_format: str | None,
        kind: str) -> None:
    html = _preview(api, model, datasets[kind], prompt_format)
    if model == "demo" and prompt_format == "chat_template":
        assert 'id="prompt-preview-error"' in html and "no chat template" in html
        with pytest.raises(PromptFormatError, match="no chat template"):
            trainer_example(models[model], ROWS[kind], prompt_format)
        return
    example = trainer_example(models[model], ROWS[kind], prompt_format)
    assert preview_ids(html) == (example.input_ids, example.labels)


def test_the_preview_cuts_at_seq_len_as_training_does(api: LocalApi, models: dict[str, Path],
                                                       datasets: dict[str, str]) -> None:
    example = trainer_example(models[SMOLLM2], ROWS["instruction"], None, seq_len=40)
    assert len(example.input_ids) == 40
    assert preview_ids(_preview(api, SMOLLM2, datasets["instruction"], None, seq_len=40)) == (
        example.input_ids, example.labels)


@pytest.mark.parametrize(("model", "resolved"), [(SMOLLM2, "chat_template"), ("demo", "alpaca")])
def test_no_choice_is_the_chat_template_when_the_tokenizer_has_one_else_alpaca(
        api: LocalApi, models: dict[str, Path], datasets: dict[str, str], model: str, resolved: str) -> None:
    from app.jobs.crud import resolve_prompt_format
    from app.web.forms import JOB_BODY

    body = JOB_BODY.validate_python(job_body(model=model))
    resolve_prompt_format(body)
    assert body.hyperparameters.prompt_format == resolved  # what the job stores and shows
    assert f'id="prompt-preview-format">{resolved}<' in _preview(api, model, datasets["instruction"], None)


def test_chat_template_on_a_tokenizer_without_one_is_refused_naming_the_field(api: LocalApi) -> None:
    response = api.client.post("/api/v1/jobs", json=job_body(hyperparameters={"prompt_format": "chat_template"}))
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "hyperparameters", "prompt_format"]
    assert "no chat template" in error["msg"] and "alpaca or plain" in error["msg"]


def test_an_unknown_prompt_format_is_refused(api: LocalApi) -> None:
    response = api.client.post("/api/v1/jobs", json=job_body(hyperparameters={"prompt_format": "chatml"}))
    assert response.status_code == 422
    assert any(e["loc"][-1] == "prompt_format" for e in response.json()["detail"]), response.text


@pytest.mark.parametrize("kind", list(ROWS))
def test_the_chat_template_renders_as_transformers_apply_chat_template(models: dict[str, Path], kind: str) -> None:
    from app.prompts import render_row
    from app.prompts.chat import row_messages

    tokenizer = _tokenizer(models[SMOLLM2])
    messages = row_messages(ROWS[kind])
    rendered = render_row(ROWS[kind], "chat_template", tokenizer.chat_template, tokenizer.special_tokens_map)
    assert rendered.prompt == tokenizer.apply_chat_template(messages[:-1], add_generation_prompt=True, tokenize=False)
    assert rendered.prompt + rendered.answer + "\n" == tokenizer.apply_chat_template(messages, tokenize=False)


def test_a_chatml_answer_is_the_content_and_the_end_of_turn_and_decodes_to_the_plain_answer(
        models: dict[str, Path]) -> None:
    from worker.train.data import IGNORE_INDEX, prompt_ids

    tokenizer = _tokenizer(models[SMOLLM2])
    example = trainer_example(models[SMOLLM2], ROWS["instruction"], "chat_template")
    trained = [label for label in example.labels if label != IGNORE_INDEX]
    assert trained[-1] == tokenizer.convert_tokens_to_ids("<|im_end|>") == tokenizer.eos_token_id
    assert tokenizer.decode(trained, skip_special_tokens=True) == "2021-03-03"  # the exact-match reference
    assert example.input_ids[:2] != [tokenizer.bos_token_id] * 2  # the template's own <|im_start|>, once
    messages = [{"role": "user", "content": "Write the date in ISO 8601.\n\n3 March 2021"}]
    assert prompt_ids(example) == tokenizer.apply_chat_template(messages, add_generation_prompt=True)["input_ids"]


@pytest.mark.parametrize(("model", "prompt_format"),
                         [(SMOLLM2, "chat_template"), (SMOLLM2, "alpaca"), (SMOLLM2, "plain"),
                          ("demo", "alpaca"), ("demo", "plain")])
def test_the_recorded_chat_template_builds_the_trained_prompt_from_a_user_message(
        models: dict[str, Path], model: str, prompt_format: str) -> None:
    from app.prompts.recorded import recorded_template
    from worker.train.data import prompt_ids

    tokenizer = _tokenizer(models[model])
    row = {"instruction": "Capital of France?", "output": "Paris"}
    example = trainer_example(models[model], row, prompt_format)
    template = recorded_template(prompt_format, tokenizer.chat_template)
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "Capital of France?"}], chat_template=template,
                                        add_generation_prompt=True)["input_ids"]
    assert ids == prompt_ids(example)


def test_the_form_offers_the_three_formats_and_marks_the_trained_part(
        api: LocalApi, models: dict[str, Path], datasets: dict[str, str]) -> None:
    html = api.client.get("/jobs/new", params={"model": SMOLLM2, "dataset": datasets["instruction"]}).text
    for value in ("chat_template", "alpaca", "plain"):
        assert f'<option value="{value}"' in html
    assert "<mark>2021-03-03&lt;|im_end|&gt;</mark>" in html
    assert "<span>&lt;|im_start|&gt;system\n" in html
