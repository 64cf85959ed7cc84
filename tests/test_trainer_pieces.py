"""Pure pieces of the trainer, in-process and fast: data rendering, collation, schedule, fault specs."""
from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ({"instruction": "Shout.", "input": "hi", "output": "HI"},
         ("### Instruction:\nShout.\n\n### Input:\nhi\n\n### Response:\n", "HI")),
        ({"instruction": "Shout.", "input": "", "output": "HI"}, ("### Instruction:\nShout.\n\n### Response:\n", "HI")),
        ({"prompt": "2+2=", "completion": "4"}, ("2+2=", "4")),
        ({"text": "plain"}, ("", "plain")),
        ({"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                       {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Bye"},
                       {"role": "assistant", "content": "Ciao"}]},
         ("<|system|>\nBe brief.\n<|user|>\nHi\n<|assistant|>\nHello\n<|user|>\nBye\n<|assistant|>\n", "Ciao")),
    ],
)
def test_row_to_pair_renders_every_format(row: dict[str, Any], expected: tuple[str, str]) -> None:
    from worker.train.data import row_to_pair

    assert row_to_pair(row) == expected


def test_encode_pair_masks_prompt_and_truncates() -> None:
    from worker.demo_model import build_tokenizer
    from worker.train.data import IGNORE_INDEX, encode_pair

    tokenizer = build_tokenizer()
    example = encode_pair(tokenizer, "ab", "CD", seq_len=128)
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    assert example.input_ids == [bos, ord("a"), ord("b"), ord("C"), ord("D"), eos]
    assert example.labels == [IGNORE_INDEX] * 3 + [ord("C"), ord("D"), eos]
    assert encode_pair(tokenizer, "ab", "CD", seq_len=4).labels == [IGNORE_INDEX] * 3 + [ord("C")]


def test_collate_pads_right_and_counts_tokens() -> None:
    from worker.train.data import IGNORE_INDEX, Example, collate

    batch = collate([Example([1, 2, 3], [IGNORE_INDEX, 2, 3]), Example([4], [4])], pad_id=0)
    assert batch.input_ids.tolist() == [[1, 2, 3], [4, 0, 0]]
    assert batch.attention_mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch.labels.tolist() == [[IGNORE_INDEX, 2, 3], [4, IGNORE_INDEX, IGNORE_INDEX]]
    assert (batch.n_tokens, batch.n_targets) == (4, 2)


def test_lr_warms_up_then_decays_to_a_tenth() -> None:
    from worker.train.loop import lr_at

    lrs = [lr_at(step, total=10, warmup=2, peak=1.0) for step in range(1, 11)]
    assert lrs[:3] == [0.5, 1.0, 1.0]
    assert lrs[-1] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(lrs[1:], lrs[2:]))


@pytest.mark.parametrize("text", ["explode@step3", "raise@stepx", "raise"])
def test_a_malformed_fault_spec_is_refused(text: str) -> None:
    from worker.train.loop import parse_fault

    with pytest.raises(ValueError, match="TUNEDECK_FAULT"):
        parse_fault(text)


def test_fault_specs_parse() -> None:
    from worker.train.loop import Fault, parse_fault

    assert parse_fault("") is None
    assert parse_fault("sigkill@step5") == Fault("sigkill", 5)
    assert parse_fault("sleep@step4:2.5") == Fault("sleep", 4, 2.5)
