"""Direct preference optimisation (Rafailov et al. 2023): prefer each pair's chosen answer to its rejected one.

The sigmoid loss of a pair is -log σ(β · ((π_c − ρ_c) − (π_r − ρ_r))), where π and ρ are the summed
log-probabilities of an answer's tokens under the trained model and under the reference (the prompt
takes no part: its labels are masked, exactly as supervised training masks them). The reference is
what the model was before training: for LoRA-family adapters the same model with the adapter switched
off (peft's `disable_adapter`), so there is no second copy; for full and freeze a frozen copy loaded
from the base folder (also after a resume, which restores the trained weights but not the reference).
Both answers of a micro-batch's pairs go through one forward, chosen rows first (`PairStream`), and
the reference forward runs without gradients. The rewards β · (π − ρ) give the metrics people watch:
their mean for the chosen and the rejected answers, the margin between them, and the accuracy (the
fraction of pairs whose chosen reward is the higher). Checked against TRL's `DPOTrainer` on the same
batch: tests/test_dpo.py.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from transformers import PreTrainedTokenizerBase

from app.prompts import encode_row
from worker.train.data import IGNORE_INDEX, Batch, BatchStream, Example, PromptTokenizer, collate, read_rows


@dataclass(frozen=True)
class PreferencePair:
    """A prompt's two answers, encoded as training rows. It reads as its chosen row where one row is
    wanted (sample prompts, grouping by length)."""

    chosen: Example
    rejected: Example

    @property
    def input_ids(self) -> list[int]:
        return self.chosen.input_ids

    @property
    def labels(self) -> list[int]:
        return self.chosen.labels


def load_pairs(path: Path, tokenizer: PreTrainedTokenizerBase, seq_len: int, prompt_format: str
               ) -> tuple[list[PreferencePair], int]:
    """Every preference row as a pair in `prompt_format`; pairs where either answer has no token left under
    seq_len (the prompt fills it) are dropped, and counted."""
    view = PromptTokenizer(tokenizer)
    pairs, dropped = [], 0
    for row in read_rows(path):
        encoded = [Example(*encode_row(view, {"messages": row["messages"], "chosen": answer}, prompt_format, seq_len,
                                       view.chat_template, view.special_tokens))
                   for answer in (row["chosen"], row["rejected"])]
        if all(any(label != IGNORE_INDEX for label in e.labels[1:]) for e in encoded):
            pairs.append(PreferencePair(*encoded))
        else:
            dropped += 1
    if not pairs:
        raise ValueError(f"no trainable pairs: every prompt is longer than seq_len={seq_len}")
    return pairs, dropped


def collate_pairs(pairs: list[PreferencePair], pad_id: int) -> Batch:
    """One batch of 2·n rows: the chosen answers, then the rejected ones (TRL's layout too)."""
    return collate([p.chosen for p in pairs] + [p.rejected for p in pairs], pad_id)


class PairStream(BatchStream):
    """`BatchStream`'s seeded, resumable order over pairs; each batch holds both answers of its pairs."""

    def __iter__(self) -> Iterator[Batch]:
        order = self._grouped_order() if self.batching == "grouped" else self._order()
        for _ in range(self.consumed):
            next(order)
        while True:
            picked = [self.examples[next(order)] for _ in range(self.batch_size)]
            self.consumed += self.batch_size
            yield collate_pairs(picked, self.pad_id)  # type: ignore[arg-type]


def sequence_logps(model: torch.nn.Module, batch: Batch, device: torch.device) -> torch.Tensor:
    """Each row's summed log-probability of its labelled tokens (the answer and its end), in fp32."""
    input_ids, mask = batch.input_ids.to(device), batch.attention_mask.to(device)
    labels = batch.labels.to(device)[:, 1:]
    logits = model(input_ids=input_ids, attention_mask=mask, use_cache=False).logits[:, -labels.shape[1] - 1:-1]
    taken = labels != IGNORE_INDEX
    per_token = torch.gather(F.log_softmax(logits.float(), dim=-1), 2, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (per_token * taken).sum(dim=1)


def reference_context(model: torch.nn.Module, reference: torch.nn.Module | None) -> AbstractContextManager[Any]:
    """Where the reference forward runs: the adapter switched off, or nothing to switch (a frozen copy)."""
    return model.disable_adapter() if reference is None else nullcontext()  # type: ignore[operator]


def reference_logps(model: torch.nn.Module, reference: torch.nn.Module | None, batch: Batch,
                    device: torch.device) -> torch.Tensor:
    with torch.no_grad(), reference_context(model, reference):
        return sequence_logps(reference if reference is not None else model, batch, device)


def pair_losses(policy: torch.Tensor, ref: torch.Tensor, beta: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-pair sigmoid losses and the rewards, from the 2·n rows' log-probabilities (chosen first)."""
    pi_c, pi_r = policy.chunk(2)
    ref_c, ref_r = ref.chunk(2)
    losses = -F.logsigmoid(beta * ((pi_c - ref_c) - (pi_r - ref_r)))
    chosen, rejected = beta * (pi_c - ref_c).detach(), beta * (pi_r - ref_r).detach()
    return losses, {"chosen": chosen, "rejected": rejected}


def metrics(rewards: dict[str, torch.Tensor], prefix: str = "") -> dict[str, float]:
    chosen, rejected = rewards["chosen"], rewards["rejected"]
    return {f"{prefix}reward_chosen": float(chosen.mean()), f"{prefix}reward_rejected": float(rejected.mean()),
            f"{prefix}reward_margin": float((chosen - rejected).mean()),
            f"{prefix}reward_accuracy": float((chosen > rejected).float().mean())}


def dpo_step(model: torch.nn.Module, reference: torch.nn.Module | None, optimizer: torch.optim.Optimizer,
             batches: Iterator[Batch], accumulation: int, params: list[torch.nn.Parameter], device: torch.device,
             beta: float, grad_clip: float, autocast: torch.dtype | None = None
             ) -> tuple[float, float, int, dict[str, float]]:
    """One optimiser step: the mean pair loss over the step's `accumulation` micro-batches, its metrics."""
    micro_batches = [next(batches) for _ in range(accumulation)]
    n_pairs = sum(b.input_ids.shape[0] // 2 for b in micro_batches)
    loss_value, gathered = 0.0, {"chosen": [], "rejected": []}
    for batch in micro_batches:
        ref = reference_logps(model, reference, batch, device)
        with torch.autocast(device.type, dtype=autocast) if autocast is not None else nullcontext():
            policy = sequence_logps(model, batch, device)
        losses, rewards = pair_losses(policy, ref, beta)
        loss = losses.sum() / n_pairs
        loss.backward()
        loss_value += loss.item()
        for key in gathered:
            gathered[key].append(rewards[key])
    grad_norm = float(torch.nn.utils.clip_grad_norm_(params, grad_clip))
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    joined = {key: torch.cat(values) for key, values in gathered.items()}
    return loss_value, grad_norm, sum(b.n_tokens for b in micro_batches), metrics(joined)


def preference_scores(model: torch.nn.Module, reference: torch.nn.Module | None, pairs: list[PreferencePair],
                      batch_size: int, pad_id: int, device: torch.device, beta: float) -> dict[str, float | None]:
    """The held-out pairs' DPO loss and rewards, in eval mode, without gradients, in a forked RNG."""
    was_training = model.training
    model.eval()
    losses, gathered = [], {"chosen": [], "rejected": []}
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            for start in range(0, len(pairs), batch_size):
                batch = collate_pairs(pairs[start:start + batch_size], pad_id)
                pair_loss, rewards = pair_losses(sequence_logps(model, batch, device),
                                                 reference_logps(model, reference, batch, device), beta)
                losses.append(pair_loss)
                for key in gathered:
                    gathered[key].append(rewards[key])
    finally:
        model.train(was_training)
    joined = {key: torch.cat(values) for key, values in gathered.items()}
    return {"eval_loss": float(torch.cat(losses).mean()), **metrics(joined, "eval_")}


def load_reference(model_path: str, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """A frozen copy of the starting weights (full, freeze), in the dtype the trained model loaded in."""
    from transformers import AutoModelForCausalLM

    dtype = next(p.dtype for p in model.parameters() if p.is_floating_point())
    reference = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype).to(device).eval()
    reference.requires_grad_(False)
    return reference
