"""Short greedy completions of a few held-out prompts, so people watch the model learn.

Greedy decoding through `generate` (with its key/value cache, several times
faster than full forward passes). Should a method's model not support
`generate`, a plain loop over full forward passes takes over; it works for
every method, prompt tuning (whose logits are longer than its input) and
prefix tuning (whose prefix arrives as a cache) included. Eval mode and a
forked RNG keep sampling from changing the training run.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from transformers import PreTrainedTokenizerBase

from worker.train.data import Example, prompt_ids

SAMPLE_PROMPTS = 3
MAX_NEW_TOKENS = 24


def pick_prompts(held_out: list[Example], train: list[Example], n: int = SAMPLE_PROMPTS) -> list[list[int]]:
    """Token ids of up to `n` prompts: held-out rows when there are, else the first training rows.

    Rows with no prompt (plain `text` datasets) have nothing to complete and are skipped.
    """
    pool = held_out or train
    picked = [ids for ids in (prompt_ids(e) for e in pool) if len(ids) > 1]
    return picked[:n]


def greedy_loop(
    model: torch.nn.Module, ids: list[int], device: torch.device, eos_id: int | None, max_new_tokens: int
) -> list[int]:
    """The next `max_new_tokens` argmax tokens after `ids` (stopping at eos), without a cache."""
    tokens = list(ids)
    new: list[int] = []
    for _ in range(max_new_tokens):
        input_ids = torch.tensor([tokens], device=device)
        logits = model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids)).logits
        token = int(logits[0, -1].argmax())
        if token == eos_id:
            break
        new.append(token)
        tokens.append(token)
    return new


def greedy(
    model: torch.nn.Module, ids: list[int], device: torch.device, eos_id: int | None, max_new_tokens: int
) -> list[int]:
    """`generate` (greedy, cached) when the model has it and it works, else `greedy_loop`."""
    generate = getattr(model, "generate", None)
    if generate is not None:
        input_ids = torch.tensor([ids], device=device)
        try:
            with warnings.catch_warnings():
                # peft's prompt tuning warns that it ignores position ids: true and harmless here.
                warnings.filterwarnings("ignore", message=".*[Pp]osition ids.*")
                output = generate(
                    input_ids=input_ids, attention_mask=torch.ones_like(input_ids), max_new_tokens=max_new_tokens,
                    do_sample=False, pad_token_id=eos_id if eos_id is not None else 0, eos_token_id=eos_id,
                    use_cache=True,
                )
        except Exception:  # noqa: BLE001 - any generate incompatibility: the plain loop still works
            output = None
        if output is not None:
            new = output[0, input_ids.shape[1]:].tolist()
            return new[: new.index(eos_id)] if eos_id in new else new
    return greedy_loop(model, ids, device, eos_id, max_new_tokens)


def generate_samples(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[list[int]],
    device: torch.device,
    step: int,
    should_stop: Callable[[], bool] = lambda: False,
    max_new_tokens: int = MAX_NEW_TOKENS,
) -> list[dict[str, object]]:
    """One {step, prompt, completion} per prompt; stops early when a cancel arrives."""
    was_training = model.training
    out: list[dict[str, object]] = []
    model.eval()
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            for ids in prompts:
                if should_stop():
                    break
                new = greedy(model, ids, device, tokenizer.eos_token_id, max_new_tokens)
                out.append({
                    "step": step,
                    "prompt": tokenizer.decode(ids, skip_special_tokens=True),
                    "completion": tokenizer.decode(new, skip_special_tokens=True),
                })
    finally:
        model.train(was_training)
    return out
