"""The built-in extraction task (app/demo_extraction.py): the dataset SmolLM2 is shown learning."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from app.demo_extraction import (
    EXTRACTION_DATASET_ROWS,
    INSTRUCTION,
    extraction_rows,
    write_extraction_dataset,
)
from tests.helpers.local_api import LocalApi

pytestmark = pytest.mark.unit


def test_the_file_is_byte_identical_across_calls(tmp_path: Path) -> None:
    first, second = tmp_path / "a.jsonl", tmp_path / "b" / "b.jsonl"
    assert write_extraction_dataset(first) == write_extraction_dataset(second) == EXTRACTION_DATASET_ROWS
    assert hashlib.sha256(first.read_bytes()).digest() == hashlib.sha256(second.read_bytes()).digest()


def test_every_row_is_distinct_so_held_out_sentences_are_unseen() -> None:
    rows = extraction_rows()
    assert len({row["input"] for row in rows}) == len(rows)
    assert len({json.loads(row["output"])["name"] for row in rows}) == len(rows)


def test_each_answer_is_the_three_fields_of_its_sentence_in_one_fixed_json_shape() -> None:
    for row in extraction_rows():
        assert row["instruction"] == INSTRUCTION
        answer = json.loads(row["output"])
        assert list(answer) == ["name", "city", "job"]
        assert row["output"] == json.dumps(answer)  # one line, the separators json.dumps writes
        assert all(value in row["input"] for value in answer.values()), row


def test_the_api_lists_it_beside_the_demo_dataset(api: LocalApi) -> None:
    listed = {d["id"]: d for d in api.client.get("/api/v1/datasets").json()["data"]}
    assert listed["demo-extract"]["rows"] == EXTRACTION_DATASET_ROWS
    assert "demo" in listed
