"""What a step optimises and how held-out rows are scored, per objective (`hyperparameters.objective`).

The loop (worker/train/loop.py) calls `objective.step` and `objective.scores` and does not know which:
supervised training (the loss on the answers; held-out loss and exact match) or DPO (worker/train/dpo.py:
the pair loss and the rewards; held-out pair loss and reward accuracy).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from app.methods import get_spec
from worker.methods import step_autocast
from worker.train import dpo
from worker.train.data import Batch
from worker.train.evaluate import held_out_scores
from worker.train.spec import TrainSpec
from worker.train.step import GRAD_CLIP, train_step

Step = Callable[..., tuple[float, float, int, dict[str, float]]]
Scores = Callable[[torch.nn.Module, PreTrainedTokenizerBase, list[Any], Any, int, torch.device], dict[str, Any]]


@dataclass(frozen=True)
class Objective:
    name: str
    step: Step  # (model, optimizer, batches, accumulation, params, device) -> loss, grad norm, tokens, metrics
    scores: Scores  # (model, tokenizer, held_out, hyperparameters, pad_id, device) -> eval metrics
    loss_vocab_size: int | None = None  # a cross-entropy's vocabulary, for the health check (worker.train.health)


def _sft_scores(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, held_out: list[Any], hp: Any,
                pad_id: int, device: torch.device) -> dict[str, Any]:
    return held_out_scores(model, tokenizer, held_out, hp.batch_size, pad_id, device, hp.seq_len)


def objective_for(spec: TrainSpec, model: torch.nn.Module, device: torch.device) -> Objective:
    hp = spec.config.hyperparameters
    autocast = step_autocast(hp, spec.config.method_config)  # precision mixed: the forward under bf16 autocast
    if hp.objective != "dpo":
        def sft_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batches: Iterator[Batch],
                     accumulation: int, params: list[torch.nn.Parameter], device: torch.device
                     ) -> tuple[float, float, int, dict[str, float]]:
            return (*train_step(model, optimizer, batches, accumulation, params, device, autocast), {})

        vocab = getattr(getattr(model, "config", None), "vocab_size", None)
        return Objective("sft", sft_step, _sft_scores, vocab if isinstance(vocab, int) else None)
    if get_spec(spec.config.method).dpo_reference == "frozen_copy":
        reference: torch.nn.Module | None = dpo.load_reference(spec.model_path, model, device)
    else:
        reference = None  # the adapter switched off
    beta = hp.dpo_beta

    def step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batches: Iterator[Batch], accumulation: int,
             params: list[torch.nn.Parameter], device: torch.device) -> tuple[float, float, int, dict[str, float]]:
        return dpo.dpo_step(model, reference, optimizer, batches, accumulation, params, device, beta, GRAD_CLIP,
                            autocast)

    def scores(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, held_out: list[Any], hp: Any, pad_id: int,
               device: torch.device) -> dict[str, Any]:
        return dpo.preference_scores(model, reference, held_out, hp.batch_size, pad_id, device, beta)

    return Objective("dpo", step, scores)
