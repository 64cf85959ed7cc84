"""A dataset's token lengths -> the batches the trainer really makes (pure: no torch, no files).

Why: the trainer pads each micro-batch to its own longest row (worker/train/data.py), so the memory
peak is set by the longest micro-batch it will produce, and the time by the positions it really
computes, not by `seq_len` × rows. This module reproduces the trainer's counting from the rows'
token lengths alone (`app.datasets.token_lengths` counts them with the model's tokenizer):

- a row is `bos + prompt + answer + eos`, cut at `seq_len`; one whose targets all fall past
  position 0 of the cut (`load_examples`: the prompt fills seq_len) is dropped;
- held-out rows (`split_holdout`): `eval_count`, else `max(1, round(rows × eval_fraction))`;
- steps: `ceil(epochs × training rows / (micro-batch × accumulation))` (`Hyperparameters.total_steps`);
- the longest micro-batch: `padded` and `grouped` batches are right-padded to their longest row,
  and every training row is in some batch of an epoch, so the widest batch is exactly the longest
  row (grouping sorts rows, it never makes a batch wider than its longest row). `padding_free` puts
  a batch's rows end to end: its widest batch is at most the `batch_size` longest rows together
  (the order is torch's seeded permutation, which the web tier does not reproduce: an upper bound).
- the positions computed per micro-batch (for the time): grouped batches sort groups of
  GROUP_BATCHES batches; padded batches are the plain order. Both are simulated here with a fixed
  Python shuffle of the training lengths (the same distribution, not torch's exact order).
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Literal

Batching = Literal["grouped", "padding_free", "padded"]
GROUP_BATCHES = 50  # worker/train/data.py: batches whose rows are sorted by length together
SIMULATED_BATCHES = 500  # enough batches for a stable mean width (within 1 %), in a few ms
HISTOGRAM_BINS = 12


@dataclass(frozen=True)
class RowLength:
    """One row's untruncated tokens: all of them (bos + prompt + answer + eos) and those before the answer."""

    total: int
    prompt: int


@dataclass(frozen=True)
class Cut:
    """The rows at one `seq_len`: what trains, what is truncated, what is dropped."""

    lengths: tuple[int, ...]  # the training-candidate rows' lengths after the cut (dropped rows left out)
    truncated: int  # rows longer than seq_len that still keep a target
    dropped: int  # rows whose prompt fills seq_len: no target left (the trainer drops them)
    shortest_prompt: int  # the shortest row's prompt (bos + prompt), in tokens
    shortest_row: int  # the shortest row, untruncated


def cut(rows: list[RowLength], seq_len: int) -> Cut:
    """The trainer's cut at seq_len (`encode_rendered`, then `load_examples`' drop rule)."""
    kept: list[int] = []
    truncated = dropped = 0
    for row in rows:
        length = min(row.total, seq_len)
        # Targets are positions prompt..total-1; position 0 is never one after the shift.
        if max(row.prompt, 1) >= length:
            dropped += 1
            continue
        kept.append(length)
        truncated += row.total > seq_len
    return Cut(tuple(kept), truncated, dropped, min((r.prompt for r in rows), default=0),
               min((r.total for r in rows), default=0))


def held_out_rows(rows: int, eval_fraction: float | None, eval_count: int | None) -> int:
    """How many usable rows `split_holdout` holds out for evaluation."""
    if eval_fraction is None and eval_count is None:
        return 0
    return eval_count if eval_count is not None else max(1, round(rows * (eval_fraction or 0.0)))


def trainer_steps(training_rows: int, batch_size: int, gradient_accumulation: int, epochs: float | None,
                  max_steps: int | None = None) -> int:
    """Optimizer steps the trainer runs (`Hyperparameters.total_steps`)."""
    if max_steps is not None:
        return max_steps
    per_step = batch_size * gradient_accumulation
    return max(1, math.ceil((epochs if epochs is not None else 1.0) * training_rows / per_step))


def peak_batch(lengths: tuple[int, ...], batch_size: int, batching: Batching) -> tuple[int, int]:
    """(rows, positions per row) of the widest micro-batch the trainer makes from these rows."""
    if not lengths:
        return batch_size, 0
    if batching == "padding_free":
        return 1, sum(sorted(lengths, reverse=True)[:batch_size])
    return batch_size, max(lengths)


def batch_widths(lengths: tuple[int, ...], batch_size: int, batching: Batching, seed: int = 0) -> list[int]:
    """Padded widths (positions per row) of a stream of micro-batches as the trainer makes them.

    Batches run across epoch boundaries, as `BatchStream` does, so every batch is full."""
    if not lengths:
        return []
    shuffler = random.Random(seed)
    per_epoch = list(lengths)
    needed = SIMULATED_BATCHES * batch_size
    stream: list[int] = []
    while len(stream) < needed:
        shuffler.shuffle(per_epoch)
        stream += per_epoch
    stream = stream[:needed - needed % batch_size]
    if batching == "grouped":
        size = GROUP_BATCHES * batch_size
        grouped: list[int] = []
        for start in range(0, len(stream), size):
            grouped += sorted(stream[start:start + size])
        stream = grouped
    batches = [stream[k:k + batch_size] for k in range(0, len(stream), batch_size)]
    if batching == "padding_free":
        return [sum(b) for b in batches]
    return [max(b) for b in batches]


def histogram(rows: list[RowLength], seq_len: int, bins: int = HISTOGRAM_BINS) -> list[dict[str, int]]:
    """Rows per length bin (untruncated lengths, shortest to longest), with how many of each `seq_len` cuts."""
    if not rows:
        return []
    shortest, longest = min(r.total for r in rows), max(r.total for r in rows)
    width = max(1, math.ceil((longest - shortest + 1) / bins))
    count = min(bins, math.ceil((longest - shortest + 1) / width))
    out = [{"low": shortest + i * width, "high": shortest + (i + 1) * width - 1, "rows": 0, "over_seq_len": 0}
           for i in range(count)]
    for row in rows:
        slot = out[min(count - 1, (row.total - shortest) // width)]
        slot["rows"] += 1
        slot["over_seq_len"] += row.total > seq_len
    return out


def percentile(values: list[int], fraction: float) -> int:
    """The value at `fraction` (0-1) of the sorted values, nearest rank."""
    if not values:
        return 0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]
