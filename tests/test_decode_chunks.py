"""Exact match decodes several held-out rows at once within the micro-batch's token budget (worker/train/evaluate)."""
from __future__ import annotations

import pytest

from worker.train.data import IGNORE_INDEX, Example
from worker.train.evaluate import EXACT_MATCH_MARGIN, MAX_DECODE_ROWS, decode_chunks

pytestmark = pytest.mark.unit


def _row(prompt: int, answer: int) -> Example:
    ids = list(range(1, prompt + answer + 1))
    return Example(input_ids=ids, labels=[IGNORE_INDEX] * prompt + ids[prompt:])


def test_rows_are_batched_while_their_padded_width_fits_the_micro_batch_tokens() -> None:
    rows = [_row(40, 10 - EXACT_MATCH_MARGIN) for _ in range(20)]  # each 50 tokens wide
    chunks = decode_chunks(rows, batch_size=1, seq_len=512)
    assert [len(c) for c in chunks] == [10, 10]
    assert [r for c in chunks for r in c] == rows


def test_without_a_seq_len_the_batch_is_the_micro_batch() -> None:
    rows = [_row(40, 6) for _ in range(5)]
    assert [len(c) for c in decode_chunks(rows, batch_size=2, seq_len=None)] == [2, 2, 1]


def test_a_batch_never_has_fewer_rows_than_the_micro_batch_nor_more_than_the_cap() -> None:
    wide = [_row(500, 100) for _ in range(6)]
    assert [len(c) for c in decode_chunks(wide, batch_size=3, seq_len=128)] == [3, 3]
    narrow = [_row(2, 1) for _ in range(40)]
    assert max(len(c) for c in decode_chunks(narrow, batch_size=1, seq_len=4096)) == MAX_DECODE_ROWS


def test_a_wide_row_the_batch_cannot_take_is_decoded_apart() -> None:
    rows = [_row(40, 6)] * 3 + [_row(300, 6)] + [_row(40, 6)] * 2  # 50 and 310 tokens wide
    chunks = decode_chunks(rows, batch_size=1, seq_len=512)
    assert [len(c) for c in chunks] == [3, 1, 2]
