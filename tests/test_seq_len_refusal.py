"""Issue 14, finding 12: a job whose every prompt fills seq_len is refused at submission, not after it starts.

The real app in-process (no Redis, no worker: a refused job never reaches them); the rows' lengths are
counted with the demo model's real tokenizer, and the trainer's own `load_examples` is the reference
for "no trainable rows".
"""
from __future__ import annotations

import json

import httpx
import pytest

from tests.helpers.api import job_body
from tests.helpers.local_api import LocalApi

pytestmark = pytest.mark.unit

LONG_PROMPT = "Summarise the following paragraph in one word, keeping only its main subject: " * 2


def _upload(client: httpx.Client, rows: list[dict[str, str]]) -> str:
    body = "".join(json.dumps(r) + "\n" for r in rows).encode()
    response = client.post("/api/v1/datasets", files={"file": ("long.jsonl", body, "application/octet-stream")})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def _long_prompts(api: LocalApi) -> str:
    return _upload(api.client, [{"instruction": LONG_PROMPT + str(i) * (i % 5), "input": "", "output": "ok"}
                                for i in range(30)])


def test_a_job_whose_every_prompt_is_longer_than_seq_len_is_refused_on_seq_len(api: LocalApi) -> None:
    """Finding 12: 422 on hyperparameters.seq_len with the shortest row and how many rows seq_len drops."""
    from transformers import AutoTokenizer

    from worker.train.data import load_examples

    dataset = _long_prompts(api)
    path = api.data_dir / "datasets" / f"{dataset}.jsonl"
    with pytest.raises(ValueError, match="no trainable rows"):  # what the trainer would say after starting
        load_examples(path, AutoTokenizer.from_pretrained(api.data_dir / "models" / "demo"), 64, "alpaca")
    response = api.client.post("/api/v1/jobs", json=job_body(dataset=dataset, hyperparameters={"seq_len": 64}))
    assert response.status_code == 422, response.text
    error = response.json()["detail"][0]
    assert error["loc"] == ["body", "hyperparameters", "seq_len"]
    shortest = 1 + len(LONG_PROMPT.encode()) + len("### Instruction:\n\n\n### Response:\n")  # bos + prompt, bytes
    assert "drops all 30 rows" in error["msg"] and "truncates none" in error["msg"]
    assert f"shortest prompt {shortest}" in error["msg"] and f"at least {shortest + 1}" in error["msg"]


def test_the_form_gets_the_same_message_before_launch_and_none_when_a_row_trains(api: LocalApi) -> None:
    """Finding 12: `seq_len_refusal` gives the job form the submission's own message (None when it trains)."""
    from sqlmodel import Session

    from app.datasets.seq_len_check import seq_len_refusal
    from app.db import get_engine

    dataset = _long_prompts(api)
    refused = api.client.post("/api/v1/jobs", json=job_body(dataset=dataset, hyperparameters={"seq_len": 64}))
    with Session(get_engine()) as session:
        message = seq_len_refusal(session, dataset, "demo", 64, "alpaca")
        assert message == refused.json()["detail"][0]["msg"]
        assert seq_len_refusal(session, dataset, "demo", 512, "alpaca") is None
        assert seq_len_refusal(session, "no-such-dataset", "demo", 64) is None
