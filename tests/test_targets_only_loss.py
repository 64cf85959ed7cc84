"""The loss on target positions only (worker/train/loss.py) computes what the full-logits loss computed.

The equalities are checked in float64, where any difference is a mistake in
the computation, not rounding: the float32 figures (about 6e-7 relative on the
loss of a SmolLM2 batch) are rounding of a different summation order.
"""
from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F

from app.methods import parse_options
from worker.train.data import IGNORE_INDEX, Batch, Example, collate
from worker.train.loss import _full_logits_loss, _parts, linear_cross_entropy, summed_loss

pytestmark = pytest.mark.unit

RELATIVE = 1e-6
CPU = torch.device("cpu")


def _close(got: torch.Tensor, want: torch.Tensor) -> bool:
    return float((got - want).norm()) <= RELATIVE * float(want.norm())


def _tiny_llama(tie: bool = False) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64,
                         tie_word_embeddings=tie)
    torch.manual_seed(0)
    return LlamaForCausalLM(config).double()


def _batch(seed: int = 1) -> Batch:
    """Rows of different lengths whose first few tokens (the prompt) carry no loss."""
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for length, prompt in ((12, 4), (30, 9), (21, 6), (7, 3)):
        ids = torch.randint(0, 96, (length,), generator=generator).tolist()
        rows.append(Example(ids, [IGNORE_INDEX] * prompt + ids[prompt:]))
    return collate(rows, pad_id=0)


def _grads(model: torch.nn.Module, loss: torch.Tensor) -> list[torch.Tensor]:
    model.zero_grad(set_to_none=True)
    loss.backward()
    return [p.grad.clone() for p in model.parameters() if p.requires_grad and p.grad is not None]


def _lora(model: Any) -> Any:
    from worker.methods import lora

    built = lora.build(model, parse_options("lora", {"r": 4, "alpha": 8, "target_modules": "attention"}))
    for name, p in built.named_parameters():
        if "lora_B" in name:  # peft starts B at zero, which would leave A's gradient zero and untested
            torch.nn.init.normal_(p, std=0.1)
    return built


def test_chunked_head_and_cross_entropy_equal_the_full_computation_with_their_gradients() -> None:
    torch.manual_seed(0)
    hidden = torch.randn(37, 16, dtype=torch.float64, requires_grad=True)
    head = torch.nn.Linear(16, 50, bias=True).double()
    targets = torch.randint(0, 50, (37,))
    got = linear_cross_entropy(hidden, head, targets, chunk=8)  # five chunks, the last one short
    got_grads = torch.autograd.grad(got, [hidden, head.weight, head.bias])
    want = F.cross_entropy(head(hidden), targets, reduction="sum")
    want_grads = torch.autograd.grad(want, [hidden, head.weight, head.bias])
    assert abs(got.item() - want.item()) <= RELATIVE * abs(want.item())
    assert all(_close(g, w) for g, w in zip(got_grads, want_grads))


def test_without_gradients_the_chunked_loss_is_the_same_number() -> None:
    torch.manual_seed(0)
    hidden, head, targets = torch.randn(20, 8, dtype=torch.float64), torch.nn.Linear(8, 30).double(), \
        torch.randint(0, 30, (20,))
    with torch.no_grad():
        got = linear_cross_entropy(hidden, head, targets, chunk=6)
    assert abs(float(got) - float(F.cross_entropy(head(hidden), targets, reduction="sum"))) <= 1e-9


@pytest.mark.parametrize("method", ["lora", "full", "full-tied"])
def test_targets_only_loss_and_gradients_equal_the_full_logits_loss(method: str) -> None:
    model = _lora(_tiny_llama()) if method == "lora" else _tiny_llama(tie=method == "full-tied")
    batch = _batch()
    assert _parts(model) is not None, "this model takes the targets-only path"
    got = summed_loss(model, batch, CPU)
    got_grads = _grads(model, got)
    want = _full_logits_loss(model, batch, CPU, batch.labels[:, 1:])
    want_grads = _grads(model, want)
    assert abs(float(got) - float(want)) <= RELATIVE * float(want)
    assert len(got_grads) == len(want_grads) > 0
    assert all(_close(g, w) for g, w in zip(got_grads, want_grads))


def test_prompt_tuning_keeps_the_path_that_counts_its_virtual_tokens() -> None:
    from worker.methods import prompt

    model = prompt.build(_tiny_llama(), parse_options("prompt", {"num_virtual_tokens": 5}))
    assert _parts(model) is None  # its virtual tokens enter through peft's forward
    batch = _batch()
    want = _full_logits_loss(model, batch, CPU, batch.labels[:, 1:])
    assert float(summed_loss(model, batch, CPU)) == pytest.approx(float(want), rel=1e-12)
