"""Evaluation on the held-out rows: the loss, and exact match of greedy completions.

Measured in eval mode (no dropout), without gradients, inside a forked RNG
so that evaluating never changes what training draws next: a run evaluated
every 10 steps trains the same weights as one evaluated only at the end, and
a resumed run the same as an uninterrupted one.

Exact match is the fraction of held-out rows whose greedy completion of the
prompt equals the reference answer once both are decoded without special
tokens and stripped of surrounding whitespace. The reference is the row's
label tokens as training saw them, so whatever ends a response in the prompt
format (eos, a chat template's `<|im_end|>` and newline) takes no part in the
comparison. Rows without a prompt (plain `text` rows) are not scored.
"""
from __future__ import annotations

import torch
from transformers import PreTrainedTokenizerBase

from worker.train.data import IGNORE_INDEX, Example, collate, prompt_ids
from worker.train.loss import summed_loss
from worker.train.samples import greedy_batch, stop_ids

# New tokens a completion may take beyond its reference's own length: room for a
# different but equal-after-trimming tokenisation and for the stop token itself.
EXACT_MATCH_MARGIN = 4
MAX_DECODE_ROWS = 16  # beyond this a CPU decode step grows with the rows; a GPU gains little more


def eval_loss(
    model: torch.nn.Module, examples: list[Example], batch_size: int, pad_id: int, device: torch.device
) -> float:
    """Mean next-token loss per response token over `examples` (the training loss's definition)."""
    was_training = model.training
    total, targets = 0.0, 0
    model.eval()
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            for start in range(0, len(examples), batch_size):
                batch = collate(examples[start:start + batch_size], pad_id)
                total += float(summed_loss(model, batch, device))
                targets += batch.n_targets
    finally:
        model.train(was_training)
    return total / max(targets, 1)


def reference_tokens(example: Example) -> list[int]:
    """The tokens that carry loss: the response as training saw it (with whatever ends it)."""
    return [label for label in example.labels if label != IGNORE_INDEX]


def reference_text(tokenizer: PreTrainedTokenizerBase, example: Example) -> str:
    """The answer to match: the reference tokens decoded without special tokens, stripped."""
    return tokenizer.decode(reference_tokens(example), skip_special_tokens=True).strip()


def is_exact_match(tokenizer: PreTrainedTokenizerBase, completion: list[int], example: Example) -> bool:
    """Whether `completion` (new token ids) says exactly the reference, up to surrounding whitespace."""
    return tokenizer.decode(completion, skip_special_tokens=True).strip() == reference_text(tokenizer, example)


def scorable(tokenizer: PreTrainedTokenizerBase, examples: list[Example]) -> list[Example]:
    """The rows with a prompt to complete (more than a lone bos)."""
    bos = tokenizer.bos_token_id
    return [e for e in examples if len(ids := prompt_ids(e)) > (1 if ids[:1] == [bos] else 0)]


def decode_chunks(rows: list[Example], batch_size: int, seq_len: int | None) -> list[list[Example]]:
    """`rows` in order, cut into decode batches: at least `batch_size` rows each, and more while the
    batch's padded width (prompt plus answer room) keeps within the training micro-batch's tokens
    (`batch_size` x `seq_len`), at most MAX_DECODE_ROWS.

    Why more than the micro-batch: one decoded token reads every weight once whatever the rows, so a
    batch of 8 costs about 1.7x one row on a CPU (SmolLM2-135M, 72 vs 128 ms a token); the token budget
    keeps the cache and activations no larger than what training already held."""
    budget = batch_size * seq_len if seq_len else 0
    chunks: list[list[Example]] = []
    chunk: list[Example] = []
    width = 0
    for row in rows:
        row_width = len(prompt_ids(row)) + len(reference_tokens(row)) + EXACT_MATCH_MARGIN
        wider = max(width, row_width)
        if chunk and len(chunk) >= batch_size and (len(chunk) >= MAX_DECODE_ROWS or (len(chunk) + 1) * wider > budget):
            chunks.append(chunk)
            chunk, wider = [], row_width
        chunk.append(row)
        width = wider
    return chunks + [chunk] if chunk else chunks


def exact_match(
    model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, examples: list[Example], batch_size: int,
    pad_id: int, device: torch.device, seq_len: int | None = None,
) -> float | None:
    """Fraction (0..1) of the scorable `examples` whose greedy completion is an exact match; None if none is.

    Each completion gets at most its reference's length plus EXACT_MATCH_MARGIN new tokens and stops at
    eos or an end-of-turn token; rows are decoded left-padded, `batch_size` at a time or, given the
    job's `seq_len`, as many as its micro-batch's tokens hold (`decode_chunks`).
    """
    rows = scorable(tokenizer, examples)
    if not rows:
        return None
    stops = stop_ids(tokenizer)
    was_training = model.training
    matched = 0
    model.eval()
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            for chunk in decode_chunks(rows, batch_size, seq_len):
                caps = [len(reference_tokens(e)) + EXACT_MATCH_MARGIN for e in chunk]
                completions = greedy_batch(model, [prompt_ids(e) for e in chunk], device, stops, caps, pad_id)
                matched += sum(is_exact_match(tokenizer, c, e) for c, e in zip(completions, chunk))
    finally:
        model.train(was_training)
    return matched / len(rows)


def held_out_scores(
    model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, examples: list[Example], batch_size: int,
    pad_id: int, device: torch.device, seq_len: int | None = None,
) -> dict[str, float | None]:
    """What an evaluation step reports: `eval_loss` and `eval_exact_match` (None when no row has a prompt)."""
    return {"eval_loss": eval_loss(model, examples, batch_size, pad_id, device),
            "eval_exact_match": exact_match(model, tokenizer, examples, batch_size, pad_id, device, seq_len)}
