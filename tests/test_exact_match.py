"""The held-out exact-match scorer on real tokenizers and a real model.

A completion matches when, decoded without special tokens and stripped of
surrounding whitespace, it equals the row's reference: its label tokens
decoded the same way. So the eos of the Alpaca format and the `<|im_end|>`
that ends a ChatML response take no part in the comparison.
"""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from worker.train.data import IGNORE_INDEX, Example
from worker.train.evaluate import exact_match, is_exact_match, reference_text
from app.methods import parse_options
from worker.methods import get_method
from worker.train.samples import greedy, greedy_batch, greedy_loop, stop_ids

pytestmark = pytest.mark.unit

CPU = torch.device("cpu")


def _example(tokenizer: PreTrainedTokenizerBase, prompt: list[int], response: str) -> Example:
    """A row as training encodes it: the prompt without loss, then the response tokens with loss."""
    answer = list(tokenizer(response, add_special_tokens=False)["input_ids"])
    return Example(input_ids=prompt + answer, labels=[IGNORE_INDEX] * len(prompt) + answer)


def _ids(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


@pytest.fixture(scope="module")
def byte_tokenizer(assets: tuple[Path, Path]) -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(str(assets[0]))


@pytest.fixture(scope="module")
def chatml(smollm2: Path) -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(str(smollm2))


def _chat_prompt(tokenizer: PreTrainedTokenizerBase, question: str) -> list[int]:
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                             tokenize=False)
    return _ids(tokenizer, rendered)


def test_the_alpaca_reference_is_the_response_without_its_eos(byte_tokenizer: PreTrainedTokenizerBase) -> None:
    row = _example(byte_tokenizer, [byte_tokenizer.bos_token_id] + _ids(byte_tokenizer, "### Response:\n"),
                   "HELLO" + byte_tokenizer.eos_token)
    assert row.labels[-1] == byte_tokenizer.eos_token_id
    assert reference_text(byte_tokenizer, row) == "HELLO"


def test_a_byte_level_completion_matches_after_trimming_whitespace(byte_tokenizer: PreTrainedTokenizerBase) -> None:
    row = _example(byte_tokenizer, [byte_tokenizer.bos_token_id], "HELLO" + byte_tokenizer.eos_token)
    assert is_exact_match(byte_tokenizer, _ids(byte_tokenizer, "  HELLO \n"), row)
    assert is_exact_match(byte_tokenizer, _ids(byte_tokenizer, "HELLO") + [byte_tokenizer.eos_token_id], row)


def test_a_byte_level_completion_that_differs_does_not_match(byte_tokenizer: PreTrainedTokenizerBase) -> None:
    row = _example(byte_tokenizer, [byte_tokenizer.bos_token_id], "HELLO" + byte_tokenizer.eos_token)
    assert not is_exact_match(byte_tokenizer, _ids(byte_tokenizer, "HELLO!"), row)
    assert not is_exact_match(byte_tokenizer, _ids(byte_tokenizer, "HEL LO"), row)
    assert not is_exact_match(byte_tokenizer, [], row)


def test_a_chatml_reference_leaves_out_im_end_and_the_newline_after_it(chatml: PreTrainedTokenizerBase) -> None:
    row = _example(chatml, _chat_prompt(chatml, "3 March 2021 in ISO 8601?"), "2021-03-03<|im_end|>\n")
    assert chatml.convert_tokens_to_ids("<|im_end|>") in row.labels
    assert reference_text(chatml, row) == "2021-03-03"


def test_a_chatml_completion_ending_its_turn_matches_and_a_wrong_one_does_not(chatml: PreTrainedTokenizerBase) -> None:
    row = _example(chatml, _chat_prompt(chatml, "3 March 2021 in ISO 8601?"), "2021-03-03<|im_end|>\n")
    im_end = chatml.convert_tokens_to_ids("<|im_end|>")
    assert is_exact_match(chatml, _ids(chatml, " 2021-03-03") + [im_end], row)
    assert not is_exact_match(chatml, _ids(chatml, "2021-03-04") + [im_end], row)
    assert not is_exact_match(chatml, _ids(chatml, "2021-03-03, a Wednesday."), row)


def test_decoding_stops_at_eos_and_the_end_of_turn_token(byte_tokenizer: PreTrainedTokenizerBase,
                                                         chatml: PreTrainedTokenizerBase) -> None:
    assert stop_ids(byte_tokenizer) == [byte_tokenizer.eos_token_id]
    assert chatml.convert_tokens_to_ids("<|im_end|>") in stop_ids(chatml)
    assert chatml.eos_token_id in stop_ids(chatml)


@pytest.fixture(scope="module")
def smol_model(smollm2: Path) -> torch.nn.Module:
    return AutoModelForCausalLM.from_pretrained(str(smollm2), dtype=torch.float32).eval()


def test_the_real_model_scores_its_own_answer_and_not_a_wrong_one(
    smol_model: torch.nn.Module, chatml: PreTrainedTokenizerBase
) -> None:
    """SmolLM2-135M-Instruct answers this with "The capital of France is Paris." (the issue's check)."""
    prompt = _chat_prompt(chatml, "What is the capital of France?")
    right = _example(chatml, prompt, "The capital of France is Paris.<|im_end|>\n")
    wrong = _example(chatml, prompt, "Lyon.<|im_end|>\n")
    pad = chatml.pad_token_id if chatml.pad_token_id is not None else chatml.eos_token_id
    assert exact_match(smol_model, chatml, [right, wrong], 2, pad, CPU) == 0.5
    assert smol_model.training is False


def test_a_left_padded_batch_completes_each_prompt_as_it_alone_would(
    smol_model: torch.nn.Module, chatml: PreTrainedTokenizerBase
) -> None:
    questions = ["What is the capital of France?", "Say hi.", "Name three colours of the rainbow, in order."]
    prompts = [_chat_prompt(chatml, q) for q in questions]
    assert len({len(p) for p in prompts}) == 3  # three widths: two rows are padded
    stops = stop_ids(chatml)
    caps = [6, 4, 6]
    alone = [greedy(smol_model, p, CPU, stops, cap) for p, cap in zip(prompts, caps)]
    with torch.no_grad():
        batched = greedy_batch(smol_model, prompts, CPU, stops, caps, chatml.eos_token_id)
    assert batched == alone
    assert all(len(c) <= cap for c, cap in zip(batched, caps))


@pytest.mark.parametrize("method", ["prompt", "prefix"])
def test_prompt_and_prefix_tuning_complete_as_plain_forward_passes_do(
    method: str, smol_model: torch.nn.Module, chatml: PreTrainedTokenizerBase
) -> None:
    """Their virtual tokens come before any padding, so they are completed row by row; `greedy_loop`
    (full forward passes, no cache) is the reference every method's completions are held to."""
    torch.manual_seed(0)
    model = get_method(method).build(copy.deepcopy(smol_model), parse_options(method, {})).eval()
    prompts = [_chat_prompt(chatml, "What is the capital of France?"), _chat_prompt(chatml, "Say hi.")]
    stops = stop_ids(chatml)
    with torch.no_grad():
        batched = greedy_batch(model, prompts, CPU, stops, [4, 4], chatml.eos_token_id)
        assert batched == [greedy_loop(model, p, CPU, stops, 4) for p in prompts]
