"""Short greedy completions of a few held-out prompts, so people watch the model learn.

Greedy decoding through `generate` (with its key/value cache, several times
faster than full forward passes). Should a method's model not support
`generate`, a plain loop over full forward passes takes over; it works for
every method, prompt tuning (whose logits are longer than its input) and
prefix tuning (whose prefix arrives as a cache) included. Eval mode and a
forked RNG keep sampling from changing the training run.

Decoding stops at eos and at the tokenizer's end-of-turn token (`stop_ids`):
a chat-template response ends with `<|im_end|>` or its kin, after which a
model would go on to write the next turn. `greedy_batch` completes several
prompts at once, left-padded, for the exact-match evaluation.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import torch
from transformers import PreTrainedTokenizerBase

from worker.train.data import Example, prompt_ids

SAMPLE_PROMPTS = 3
MAX_NEW_TOKENS = 48  # room for a short structured answer (a one-line JSON object is ~26 SmolLM2 tokens)
# Tokens that end an assistant turn in the chat templates of the families users bring (ChatML, Llama 3, Phi-3,
# Gemma, GPT-2/Qwen's end of text); the ones a tokenizer has are stop tokens beside its eos.
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>")

Stops = int | Sequence[int] | None  # one eos id (the old call), several stop ids, or none


def stop_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The tokenizer's eos and whichever END_OF_TURN_TOKENS it has, sorted, without repeats."""
    vocab = tokenizer.get_vocab()
    ids = {vocab[name] for name in END_OF_TURN_TOKENS if name in vocab}
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return sorted(ids)


def _stop_list(stops: Stops) -> list[int]:
    if stops is None:
        return []
    return [stops] if isinstance(stops, int) else list(stops)


def until_stop(tokens: list[int], stops: Stops) -> list[int]:
    """`tokens` up to (not including) the first stop token."""
    stop_set = set(_stop_list(stops))
    for i, token in enumerate(tokens):
        if token in stop_set:
            return tokens[:i]
    return tokens


def pick_prompts(held_out: list[Example], train: list[Example], n: int = SAMPLE_PROMPTS) -> list[list[int]]:
    """Token ids of up to `n` prompts: held-out rows when there are, else the first training rows.

    Rows with no prompt (plain `text` datasets) have nothing to complete and are skipped.
    """
    pool = held_out or train
    picked = [ids for ids in (prompt_ids(e) for e in pool) if len(ids) > 1]
    return picked[:n]


def greedy_loop(
    model: torch.nn.Module, ids: list[int], device: torch.device, eos_id: Stops, max_new_tokens: int
) -> list[int]:
    """The next `max_new_tokens` argmax tokens after `ids` (stopping at a stop token), without a cache."""
    stops = set(_stop_list(eos_id))
    tokens = list(ids)
    new: list[int] = []
    for _ in range(max_new_tokens):
        input_ids = torch.tensor([tokens], device=device)
        logits = model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids)).logits
        token = int(logits[0, -1].argmax())
        if token in stops:
            break
        new.append(token)
        tokens.append(token)
    return new


def _generate(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, stops: list[int],
              max_new_tokens: int, pad_id: int) -> list[list[int]] | None:
    """Greedy, cached `generate`: each row's new tokens, or None when this model's `generate` fails."""
    generate = getattr(model, "generate", None)
    if generate is None:
        return None
    try:
        with warnings.catch_warnings():
            # peft's prompt tuning warns that it ignores position ids: true and harmless here.
            warnings.filterwarnings("ignore", message=".*[Pp]osition ids.*")
            output = generate(
                input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=max_new_tokens, do_sample=False,
                pad_token_id=pad_id, eos_token_id=stops or None, use_cache=True,
            )
    except Exception:  # noqa: BLE001 - any generate incompatibility: the plain loop still works
        return None
    return output[:, input_ids.shape[1]:].tolist()


def greedy(
    model: torch.nn.Module, ids: list[int], device: torch.device, eos_id: Stops, max_new_tokens: int
) -> list[int]:
    """`generate` (greedy, cached) when the model has it and it works, else `greedy_loop`.

    `eos_id` is one stop token or several (`stop_ids`); the completion ends before the first."""
    stops = _stop_list(eos_id)
    input_ids = torch.tensor([ids], device=device)
    output = _generate(model, input_ids, torch.ones_like(input_ids), stops, max_new_tokens, stops[0] if stops else 0)
    if output is not None:
        return until_stop(output[0], stops)
    return greedy_loop(model, ids, device, stops, max_new_tokens)


def _is_prompt_learning(model: torch.nn.Module) -> bool:
    """Prompt and prefix tuning (peft): their virtual tokens would sit before the left padding: completed one row at a time."""
    return bool(getattr(getattr(model, "active_peft_config", None), "is_prompt_learning", False))


def greedy_batch(
    model: torch.nn.Module, prompts: list[list[int]], device: torch.device, stops: Sequence[int],
    max_new_tokens: list[int], pad_id: int,
) -> list[list[int]]:
    """`greedy` of every prompt (row i capped at `max_new_tokens[i]`), computed as one left-padded batch.

    Left padding with its attention mask is how `generate` batches a decoder (position ids follow the mask),
    and greedy decoding is prefix-consistent, so each row is what `greedy` alone gives it, up to float
    rounding. Prompt-learning models, and any model whose batched `generate` fails, go one row at a time.
    """
    stop_list = list(stops)
    if len(prompts) > 1 and not _is_prompt_learning(model):
        width = max(len(ids) for ids in prompts)
        input_ids = torch.tensor([[pad_id] * (width - len(ids)) + ids for ids in prompts], device=device)
        mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in prompts], device=device)
        output = _generate(model, input_ids, mask, stop_list, max(max_new_tokens), pad_id)
        if output is not None:
            return [until_stop(row[:cap], stop_list) for row, cap in zip(output, max_new_tokens)]
    return [greedy(model, ids, device, stop_list, cap) for ids, cap in zip(prompts, max_new_tokens)]


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
    stops = stop_ids(tokenizer)
    model.eval()
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            for ids in prompts:
                if should_stop():
                    break
                new = greedy(model, ids, device, stops, max_new_tokens)
                out.append({
                    "step": step,
                    "prompt": tokenizer.decode(ids, skip_special_tokens=True),
                    "completion": tokenizer.decode(new, skip_special_tokens=True),
                })
    finally:
        model.train(was_training)
    return out
