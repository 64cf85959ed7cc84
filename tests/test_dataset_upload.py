"""POST /api/v1/datasets: good files are stored, bad files get line-numbered 422s and store nothing."""
from __future__ import annotations

import json

import httpx
import pytest

from tests.helpers.api import dataset_files
from tests.helpers.local_api import LocalApi

# The app in-process with no worker and no Redis: uploads are validated and stored by the API alone.
pytestmark = pytest.mark.unit


@pytest.fixture
def client(api: LocalApi) -> httpx.Client:
    return api.client


def _upload(client: httpx.Client, name: str, content: bytes, content_type: str = "application/octet-stream") -> httpx.Response:
    return client.post("/api/v1/datasets", files={"file": (name, content, content_type)})


def _alpaca(i: int) -> str:
    return json.dumps({"instruction": f"Say {i}", "input": "", "output": str(i)})


def test_a_valid_jsonl_is_stored_with_its_row_count_and_format(client: httpx.Client) -> None:
    body = "\n".join(_alpaca(i) for i in range(25)) + "\n"
    response = _upload(client, "numbers.jsonl", body.encode())
    assert response.status_code == 201, response.text
    data = response.json()
    assert data["rows"] == 25 and data["format"] == "alpaca" and data["name"] == "numbers.jsonl"
    listed = client.get("/api/v1/datasets").json()["data"]
    assert data["id"] in {d["id"] for d in listed}


def test_a_valid_csv_with_prompt_and_completion_is_stored(client: httpx.Client) -> None:
    body = "prompt,completion\nhello,world\n\"a, b\",c\n"
    response = _upload(client, "pairs.csv", body.encode(), "text/csv")
    assert response.status_code == 201, response.text
    assert response.json()["rows"] == 2 and response.json()["format"] == "prompt_completion"


def test_chat_messages_and_text_rows_are_accepted(client: httpx.Client) -> None:
    chat = json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]})
    assert _upload(client, "chat.jsonl", (chat + "\n") * 3).json()["format"] == "messages"
    text = json.dumps({"text": "once upon a time"})
    assert _upload(client, "text.jsonl", (text + "\n") * 3).json()["format"] == "text"


def test_bad_json_and_a_missing_field_are_reported_by_line_and_nothing_is_stored(api: LocalApi, client: httpx.Client) -> None:
    lines = [_alpaca(i) for i in range(15)]
    lines[6] = '{"instruction": "broken", "output": '  # line 7
    lines[11] = json.dumps({"instruction": "no output here"})  # line 12
    before_rows = client.get("/api/v1/datasets").json()["count"]
    before_files = dataset_files(api.data_dir)
    response = _upload(client, "broken.jsonl", ("\n".join(lines) + "\n").encode())
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert [item["line"] for item in detail] == [7, 12]
    assert "invalid JSON" in detail[0]["error"]
    assert "output" in detail[1]["error"]
    assert client.get("/api/v1/datasets").json()["count"] == before_rows
    assert dataset_files(api.data_dir) == before_files


def test_an_empty_file_is_refused(api: LocalApi, client: httpx.Client) -> None:
    before_files = dataset_files(api.data_dir)
    response = _upload(client, "empty.jsonl", b"")
    assert response.status_code == 422
    assert response.json()["detail"] == [{"line": 1, "error": "the file is empty: no rows to train on"}]
    assert dataset_files(api.data_dir) == before_files


def test_a_non_utf8_file_names_the_line_with_the_bad_byte(api: LocalApi, client: httpx.Client) -> None:
    before_files = dataset_files(api.data_dir)
    content = (_alpaca(1) + "\n" + _alpaca(2) + "\n").encode() + b'{"text": "caf\xe9"}\n'
    response = _upload(client, "latin1.jsonl", content)
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert detail[0]["line"] == 3 and "UTF-8" in detail[0]["error"]
    assert dataset_files(api.data_dir) == before_files


def test_a_row_of_another_format_than_the_first_is_an_error_on_that_line(client: httpx.Client) -> None:
    content = _alpaca(1) + "\n" + json.dumps({"text": "mixed"}) + "\n"
    response = _upload(client, "mixed.jsonl", content.encode())
    assert response.status_code == 422
    assert response.json()["detail"][0]["line"] == 2


def test_an_array_row_says_what_it_expected(client: httpx.Client) -> None:
    response = _upload(client, "array.jsonl", b'[1, 2]\n')
    assert response.status_code == 422
    assert "expected a JSON object" in response.json()["detail"][0]["error"]


def test_a_file_that_is_neither_jsonl_nor_csv_is_refused(client: httpx.Client) -> None:
    response = _upload(client, "model.bin", b"\x80\x04binary")
    assert response.status_code == 422


def test_a_hostile_file_name_never_becomes_a_path(api: LocalApi, client: httpx.Client) -> None:
    content = (_alpaca(1) + "\n").encode()
    response = _upload(client, "../../etc/evil.jsonl", content)
    assert response.status_code == 201
    assert response.json()["name"] == "evil.jsonl"
    assert not (api.data_dir.parent / "etc").exists()
    stored = dataset_files(api.data_dir)
    assert f"{response.json()['id']}.jsonl" in stored


def test_an_upload_is_counted_for_the_default_model_in_the_background(api: LocalApi, client: httpx.Client) -> None:
    """Issue 14, finding 10: the first plan on a new dataset finds its tokens already counted (no wait)."""
    import time

    from app import storage
    from app.catalog.models import default_model_id
    from app.datasets.token_lengths import dataset_lengths

    cache = api.data_dir / "cache" / "token_lengths"
    before = set(cache.glob("*.json"))
    response = _upload(client, "counted.jsonl", ("\n".join(_alpaca(i) for i in range(50)) + "\n").encode())
    path = storage.absolute(f"datasets/{response.json()['id']}.jsonl")
    from app.datasets.token_lengths import _disk_cache, _key, _stamp
    from app.prompts.tokenizer import load_tokenizer, model_folder

    folder = model_folder(default_model_id())
    assert folder is not None
    fmt = "chat_template" if load_tokenizer(folder).chat_template else "alpaca"
    own = _disk_cache(_key(_stamp(folder / "tokenizer.json"), path, fmt))  # this file's count, not a built-in's
    deadline = time.monotonic() + 30
    while not own.is_file() and time.monotonic() < deadline:  # nobody asked for a plan yet
        time.sleep(0.05)
    lengths = dataset_lengths(path, default_model_id(), wait=0)
    assert own.is_file() and own in set(cache.glob("*.json")) - before
    assert lengths.counted and len(lengths.rows) == 50
