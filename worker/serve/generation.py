"""One batched `generate` call for requests that can share it, each row streamed as it grows.

Why stock `model.generate` and not a decode loop of our own: a user compares what the playground
says with what `transformers` + `peft` say on their own machine, and greedy answers must be the
same text (tests/test_serving_openai.py checks it against a fresh process). Rows of a batch are
left-padded; each row stops on its own (its `max_tokens`, a stop string, end of sequence, or a
cancel from the API) through one stopping criterion that answers per row, and a streamer that
receives every step's tokens decodes each row's text incrementally. Text is held back while it
ends in a partial UTF-8 character or could still become a stop string.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase, StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

Message = tuple[str, str, dict[str, Any]]  # (request id, reply kind, data)
# Send these messages and say which of these live request ids were cancelled: one Redis round trip a step.
Exchange = Callable[[list[Message], list[str]], set[str]]


@dataclass
class Row:
    """One request's place in a batch."""

    request_id: str
    input_ids: list[int]
    max_new_tokens: int
    stop: list[str] = field(default_factory=list)
    adapter: str | None = None
    tokens: list[int] = field(default_factory=list)
    sent: int = 0  # characters of the text already emitted
    finish: str | None = None  # "stop" | "length" | "cancelled"
    finished_at: float = 0.0
    eos: bool = False  # ended by the end-of-sequence token (counted in the usage, not in the text)


@dataclass(frozen=True)
class Sampling:
    """What a whole batch samples with (rows with other settings go to another batch)."""

    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


class _Rows(BaseStreamer, StoppingCriteria):
    """The streamer `generate` feeds every step's tokens to, and the per-row stopping criterion."""

    def __init__(self, rows: list[Row], tokenizer: PreTrainedTokenizerBase, eos: set[int], exchange: Exchange) -> None:
        self.rows, self.tokenizer, self.eos, self.exchange = rows, tokenizer, eos, exchange
        self.outbox: list[Message] = []
        self.prompt_seen = False
        self.started = time.perf_counter()
        self.holdback = max((len(s) for r in rows for s in r.stop), default=1) - 1

    # -- BaseStreamer ----------------------------------------------------------------
    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:  # the first call is the prompt itself
            self.prompt_seen = True
            return
        for row, token in zip(self.rows, value.reshape(-1).tolist()):
            if row.finish is not None:
                continue
            if token in self.eos:
                row.eos = True
                self._finish(row, "stop")
                continue
            row.tokens.append(token)
            self._advance(row)
            if row.finish is None and len(row.tokens) >= row.max_new_tokens:
                self._finish(row, "length")
        live = [r.request_id for r in self.rows if r.finish is None]
        gone = self.exchange(self.outbox, live) if live or self.outbox else set()
        self.outbox = []
        for row in self.rows:
            if row.request_id in gone:
                row.finish, row.finished_at = "cancelled", time.perf_counter()

    def end(self) -> None:
        for row in self.rows:
            if row.finish is None:
                self._finish(row, "length")
        if self.outbox:
            self.exchange(self.outbox, [])
            self.outbox = []

    # -- StoppingCriteria ------------------------------------------------------------
    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        done = [row.finish is not None for row in self.rows]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)  # type: ignore[return-value]

    # -- text ------------------------------------------------------------------------
    def _text(self, row: Row) -> str:
        return self.tokenizer.decode(row.tokens, skip_special_tokens=True)

    def _advance(self, row: Row) -> None:
        text = self._text(row)
        if any(text.find(stop, max(0, row.sent - len(stop) + 1)) >= 0 for stop in row.stop):
            self._finish(row, "stop")
            return
        safe = len(text) - (self.holdback if row.stop else 0)
        while safe > row.sent and text[safe - 1] == "\ufffd":  # a multi-byte character not yet whole
            safe -= 1
        self._send(row, text[:safe])

    def _send(self, row: Row, text: str) -> None:
        if len(text) > row.sent:
            self.outbox.append((row.request_id, "delta", {"text": text[row.sent:]}))
            row.sent = len(text)

    def _finish(self, row: Row, reason: str) -> None:
        """The rest of the text (what `decode` gives for every token, up to a stop string), then `done` at once:
        a row that ends early in a batch is answered without waiting for the others."""
        text = self._text(row)
        self._send(row, text[:min((at for s in row.stop if (at := text.find(s)) >= 0), default=len(text))])
        row.finish, row.finished_at = reason, time.perf_counter()
        seconds = max(row.finished_at - self.started, 1e-9)
        completion = len(row.tokens) + int(row.eos)
        self.outbox.append((row.request_id, "done", {
            "finish_reason": reason,
            "usage": {"prompt_tokens": len(row.input_ids), "completion_tokens": completion,
                      "total_tokens": len(row.input_ids) + completion},
            "seconds": round(seconds, 4), "tokens_per_second": round(len(row.tokens) / seconds, 2),
            "batch_size": len(self.rows)}))


def run_batch(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, rows: list[Row], sampling: Sampling,
              exchange: Exchange, exclusive_adapter: str | None = None) -> None:
    """Generate every row to its end; sends `delta` chunks as they come and one `done` per row as it ends."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    eos_ids = model.generation_config.eos_token_id if hasattr(model, "generation_config") else None
    eos = set(eos_ids if isinstance(eos_ids, list) else [eos_ids] if eos_ids is not None else [])
    if tokenizer.eos_token_id is not None:
        eos.add(tokenizer.eos_token_id)
    width = max(len(r.input_ids) for r in rows)
    device = next(model.parameters()).device
    input_ids = torch.tensor([[pad] * (width - len(r.input_ids)) + r.input_ids for r in rows], device=device)
    mask = torch.tensor([[0] * (width - len(r.input_ids)) + [1] * len(r.input_ids) for r in rows], device=device)
    tracker = _Rows(rows, tokenizer, eos, exchange)  # its clock starts here: prefill counts in tokens/s
    kwargs: dict[str, Any] = {"max_new_tokens": max(r.max_new_tokens for r in rows), "pad_token_id": pad,
                              "streamer": tracker, "stopping_criteria": StoppingCriteriaList([tracker])}
    if sampling.greedy:
        kwargs.update(do_sample=False)
    else:
        kwargs.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p, top_k=0)
        if sampling.seed is not None:
            torch.manual_seed(sampling.seed)
    if exclusive_adapter is not None:
        model.set_adapter(exclusive_adapter)
    elif any(r.adapter is not None for r in rows):
        kwargs["adapter_names"] = [r.adapter for r in rows]
    with torch.inference_mode():
        model.generate(input_ids=input_ids, attention_mask=mask, **kwargs)
