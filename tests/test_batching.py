"""How rows become batches (worker/train/data.py): grouped by length, padding-free, padded.

Grouped and padding-free batches must compute the padded batch's loss on the
same rows, and all three must be deterministic and resume exactly.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from app.methods import parse_options
from tests.helpers.trainer import run_trainer, write_spec
from worker.train.data import GROUP_BATCHES, IGNORE_INDEX, BatchStream, Example, collate, collate_packed
from worker.train.loss import summed_loss

pytestmark = pytest.mark.unit

CPU = torch.device("cpu")


def _rows(count: int = 400, seed: int = 3) -> list[Example]:
    """Rows of 6 to 60 tokens, the first third of each a prompt without loss."""
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(count):
        length = int(torch.randint(6, 61, (1,), generator=generator))
        ids = torch.randint(1, 96, (length,), generator=generator).tolist()
        prompt = max(1, length // 3)
        rows.append(Example(ids, [IGNORE_INDEX] * prompt + ids[prompt:]))
    return rows


def _padding(stream: BatchStream, steps: int) -> float:
    batches = iter(stream)
    real = total = 0
    for _ in range(steps):
        batch = next(batches)
        real, total = real + batch.n_tokens, total + batch.input_ids.numel()
    return 1 - real / total


def _ids(stream: BatchStream, steps: int) -> list[list[list[int]]]:
    batches = iter(stream)
    return [next(batches).input_ids.tolist() for _ in range(steps)]


def test_grouped_batches_pad_far_less_than_the_plain_order() -> None:
    rows = _rows()
    padded = _padding(BatchStream(rows, 8, 42, 0, "padded"), 40)
    grouped = _padding(BatchStream(rows, 8, 42, 0, "grouped"), 40)
    assert padded > 0.3 and grouped < 0.1, (padded, grouped)


def test_padding_free_batches_hold_no_padding_and_as_many_targets() -> None:
    rows = _rows()[:8]
    packed, padded = collate_packed(rows), collate(rows, pad_id=0)
    assert packed.input_ids.shape == (1, packed.n_tokens) and packed.n_tokens == padded.n_tokens
    assert packed.n_targets == padded.n_targets
    assert packed.position_ids is not None and packed.position_ids[0, len(rows[0].input_ids)] == 0


def test_grouped_order_trains_on_the_same_rows_as_the_plain_order_group_by_group() -> None:
    rows = _rows()
    group = GROUP_BATCHES * 4
    plain, grouped = BatchStream(rows, 4, 7, 0, "padded")._order(), BatchStream(rows, 4, 7, 0)._grouped_order()
    assert sorted(next(plain) for _ in range(group)) == sorted(next(grouped) for _ in range(group))


@pytest.mark.parametrize("batching", ["grouped", "padding_free", "padded"])
def test_a_resumed_stream_continues_with_the_batches_of_the_uninterrupted_one(batching: str) -> None:
    rows = _rows()
    whole = _ids(BatchStream(rows, 8, 42, 0, batching), 80)  # past an epoch (400 rows) and a group (50 batches)
    resumed = BatchStream(rows, 8, 42, 0, batching)
    resumed.consumed = 8 * 57
    assert _ids(resumed, 23) == whole[57:]


def _tiny_llama() -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=128)
    torch.manual_seed(0)
    return LlamaForCausalLM(config)


def _model(method: str) -> Any:
    if method == "full":
        return _tiny_llama()
    from worker.methods import lora, prompt

    if method == "lora":
        return lora.build(_tiny_llama(), parse_options("lora", {"r": 4, "alpha": 8, "target_modules": "attention"}))
    return prompt.build(_tiny_llama(), parse_options("prompt", {"num_virtual_tokens": 5}))


@pytest.mark.parametrize("method", ["lora", "full", "prompt"])
def test_grouped_and_padding_free_batches_give_the_padded_loss_on_the_same_rows(method: str) -> None:
    model = _model(method)
    batch = next(iter(BatchStream(_rows(), 8, 42, 0, "grouped")))
    rows = [Example(ids[:n], labels[:n]) for ids, labels, n in
            zip(batch.input_ids.tolist(), batch.labels.tolist(), batch.attention_mask.sum(1).tolist())]
    wide = collate(rows + [Example([1] * 120, [IGNORE_INDEX] * 120)], pad_id=0)  # the same rows padded to 120
    wide = type(wide)(wide.input_ids[:-1], wide.attention_mask[:-1], wide.labels[:-1], wide.n_tokens - 120,
                      wide.n_targets)
    with torch.no_grad():
        grouped = float(summed_loss(model, batch, CPU))
        padded = float(summed_loss(model, wide, CPU))
        assert grouped == pytest.approx(padded, rel=1e-5)
        if method != "prompt":  # prompt tuning refuses padding-free batches (below)
            assert float(summed_loss(model, collate_packed(rows), CPU)) == pytest.approx(padded, rel=1e-5)


def _losses(tmp_path: Path, assets: tuple[Path, Path], name: str, method: str, **hp: Any) -> list[float]:
    model, dataset = assets
    options = {"lora": {"r": 8, "alpha": 16, "target_modules": "attention"}, "full": {}}[method]
    spec = write_spec(tmp_path / name, model, dataset, method=method, method_config=options, max_steps=6,
                      checkpoint_every=0, **hp)
    run = run_trainer(spec)
    assert run.returncode == 0, run.stderr[-2000:]
    return [point["loss"] for point in run.of("metric")]


def test_a_padding_free_job_logs_the_padded_jobs_loss_at_every_step(
        tmp_path: Path, assets: tuple[Path, Path]) -> None:
    """LoRA end to end (full fine-tuning's batches are checked above, without the trainer's start-up)."""
    padded = _losses(tmp_path, assets, "padded", "lora", batching="padded")
    packed = _losses(tmp_path, assets, "packed", "lora", batching="padding_free")
    assert len(padded) == 6 and packed == pytest.approx(padded, rel=1e-5)


def test_a_padding_free_prompt_tuning_job_is_refused_with_the_reason(
        tmp_path: Path, assets: tuple[Path, Path]) -> None:
    model, dataset = assets
    spec = write_spec(tmp_path / "prompt", model, dataset, method="prompt", method_config={"num_virtual_tokens": 4},
                      max_steps=2, batching="padding_free")
    run = run_trainer(spec)
    assert run.returncode != 0
    assert "prepends its virtual tokens" in run.stdout + run.stderr
