"""The demo dataset and demo model that stand in for the unreachable model hub."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from app.demo_dataset import DEMO_DATASET_ROWS, write_demo_dataset
from worker.demo_model import DEMO_MODEL_ID, build_model, build_tokenizer, ensure_demo_model

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def demo_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_demo_model(tmp_path_factory.mktemp("models"))


def test_demo_dataset_is_byte_identical_across_calls(tmp_path: Path) -> None:
    first, second = tmp_path / "a.jsonl", tmp_path / "b" / "b.jsonl"
    assert write_demo_dataset(first) == write_demo_dataset(second) == DEMO_DATASET_ROWS
    assert first.read_bytes() == second.read_bytes()


def test_demo_dataset_is_short_alpaca_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "demo.jsonl"
    count = write_demo_dataset(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == count
    for line in lines:
        row = json.loads(line)
        assert list(row) == ["instruction", "input", "output"]
        assert all(isinstance(value, str) and value for value in row.values())
        assert len(row["instruction"] + row["input"] + row["output"]) < 100
    assert len({json.loads(line)["instruction"] for line in lines}) >= 2


def test_demo_dataset_write_leaves_no_temp_files(tmp_path: Path) -> None:
    write_demo_dataset(tmp_path / "demo.jsonl")
    assert [p.name for p in tmp_path.iterdir()] == ["demo.jsonl"]


def test_demo_model_loads_with_auto_classes(demo_model_dir: Path) -> None:
    assert demo_model_dir.name == DEMO_MODEL_ID
    model = AutoModelForCausalLM.from_pretrained(demo_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(demo_model_dir)
    assert model.config.model_type == "llama"
    assert model.config.num_key_value_heads < model.config.num_attention_heads  # grouped-query attention
    assert 1_000_000 < sum(p.numel() for p in model.parameters()) < 10_000_000
    assert model.config.vocab_size == len(tokenizer)
    assert (model.config.bos_token_id, model.config.eos_token_id, model.config.pad_token_id) == (
        tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id
    )
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id
    assert (demo_model_dir / "model.safetensors").is_file()


def test_demo_tokenizer_round_trips_text(demo_model_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(demo_model_dir)
    text = "Hello, WORLD! ünïcödé"
    ids = tokenizer(text)["input_ids"]
    assert ids[0] == tokenizer.bos_token_id
    assert len(ids) == 1 + len(text.encode("utf-8"))  # one token per byte
    assert tokenizer.decode(ids, skip_special_tokens=True) == text


def test_demo_model_runs_a_forward_pass(demo_model_dir: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(demo_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(demo_model_dir)
    batch = tokenizer(["abc", "hello"], return_tensors="pt", padding=True)
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape == (2, batch["input_ids"].shape[1], len(tokenizer))
    assert torch.isfinite(logits).all()


def test_ensure_demo_model_leaves_an_existing_model_untouched(demo_model_dir: Path) -> None:
    weights = demo_model_dir / "model.safetensors"
    before = weights.stat().st_mtime_ns
    assert ensure_demo_model(demo_model_dir.parent) == demo_model_dir
    assert weights.stat().st_mtime_ns == before
    assert sorted(p.name for p in demo_model_dir.parent.iterdir()) == [DEMO_MODEL_ID]


def test_demo_model_weights_are_reproducible(demo_model_dir: Path) -> None:
    saved = load_file(demo_model_dir / "model.safetensors")
    rebuilt = build_model(build_tokenizer()).state_dict()
    assert set(saved) <= set(rebuilt)
    assert all(torch.equal(tensor, rebuilt[name]) for name, tensor in saved.items())
