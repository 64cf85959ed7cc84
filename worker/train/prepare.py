"""Everything the loop needs before its first step: the model, the data, the optimiser, the start.

Kept apart from the loop so that it reads as the training itself; the order
of the calls is part of the contract (see `train`): building the model draws
from the seeded RNG, and a resume restores the RNG states last.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from app.catalog.trust import remote_code_allowed
from app.methods import get_spec
from app.schemas.hyperparameters import Batching
from worker.methods import Method, get_method, load_base, optimizer_name
from worker.methods.optimizers import build_optimizer
from worker.train import checkpoint, events
from worker.train.data import BatchStream, Example, load_examples, prompt_format_of, split_holdout
from worker.train.dpo import PairStream, load_pairs
from worker.train.spec import TrainSpec


def load_model(spec: TrainSpec, device: torch.device) -> tuple[PreTrainedTokenizerBase, Method, torch.nn.Module]:
    """The tokenizer, the method and the base as the method builds it (adapters in, the rest frozen)."""
    hp = spec.config.hyperparameters
    events.log(f"Loading model from {spec.model_path} on {device.type}")
    tokenizer = AutoTokenizer.from_pretrained(spec.model_path, trust_remote_code=remote_code_allowed(spec.model_path))
    method = get_method(spec.config.method)
    model = load_base(method, spec.model_path, hp, spec.config.method_config)
    if hp.gradient_checkpointing and not model.is_activation_checkpointing:
        # transformers 5 renamed gradient_checkpointing_enable (now a deprecated alias).
        # Non-reentrant checkpointing lets gradients reach adapters behind frozen embeddings.
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    # A quantised base is placed on its device at load (bitsandbytes) and must not be moved.
    placed = getattr(model, "hf_quantizer", None) is not None
    model = method.build(model, spec.config.method_config)
    if not placed:
        model = model.to(device)
    events.log(f"Precision: {precision_note(hp, model)}")
    return tokenizer, method, model


def precision_note(hp: Any, model: torch.nn.Module) -> str:
    """What the job's `precision` made of the run, read off the model: the log shows what really runs."""
    dtypes = sorted({str(p.dtype).removeprefix("torch.") for p in model.parameters()})
    asked = hp.precision or "unset (the worker's float32)"
    autocast = " under bfloat16 autocast" if hp.precision == "mixed" else ""
    return f"{asked}: weights in {', '.join(dtypes)}{autocast}"


@dataclass(frozen=True)
class Data:
    """The training rows in batches, the held-out rows, and how many steps the run takes."""

    examples: list[Example]
    held_out: list[Example]
    stream: BatchStream
    pad_id: int
    total_steps: int


def batching_for(spec: TrainSpec, model: torch.nn.Module) -> tuple[Batching, str]:
    """The job's batching and why: the one asked for, else padding-free where flash-attention's varlen
    path runs (attention then costs per row, not per packed row), else grouped by length.

    On the CPU, SDPA turns a packed row into a dense block-diagonal mask over the whole step, which made
    padding-free 0.75x as fast as padded on a small model; grouped batches are faster on both sizes."""
    requested = spec.config.hyperparameters.batching
    why_not = get_spec(spec.config.method).no_padding_free
    if requested == "padding_free" and why_not is not None:
        raise ValueError(why_not)
    if requested is not None:
        return requested, "as the job asks"
    attention = str(getattr(getattr(model, "config", None), "_attn_implementation", "") or "")
    if attention.startswith("flash") and why_not is None:
        return "padding_free", f"the default with {attention}"
    return "grouped", "the default: rows of similar length batched together"


def load_data(spec: TrainSpec, tokenizer: PreTrainedTokenizerBase, model: torch.nn.Module) -> Data:
    hp = spec.config.hyperparameters
    # Padding never reaches the loss or attention, so any id will do when there is no pad token.
    pad_id = next(i for i in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0) if i is not None)
    prompt_format = prompt_format_of(tokenizer, hp.prompt_format)
    events.log(f"Prompt format: {prompt_format}" + ("" if hp.prompt_format else
               " (the default: the model's chat template when its tokenizer has one, else alpaca)"))
    load = load_pairs if hp.objective == "dpo" else load_examples  # preference pairs for DPO, else rows
    examples, dropped = load(spec.dataset_path, tokenizer, hp.seq_len, prompt_format)
    if spec.validation_path is not None:  # a validation dataset of its own: every training row trains
        held_out, _ = load(spec.validation_path, tokenizer, hp.seq_len, prompt_format)
    else:
        examples, held_out = split_holdout(examples, hp.eval_fraction, hp.eval_count, hp.seed)
    total_steps = hp.total_steps(len(examples))
    events.log(
        f"Dataset: {len(examples)} training rows" + (f", {len(held_out)} held out for evaluation" if held_out else "")
        + (f" ({dropped} dropped: prompt fills seq_len)" if dropped else "")
        + f"; {total_steps} steps of {hp.batch_size}×{hp.gradient_accumulation} rows"
    )
    batching, why = batching_for(spec, model)
    if hp.objective == "dpo" and batching == "padding_free":  # a pair's answers go side by side, padded
        batching, why = "grouped", "DPO batches each pair's two answers side by side"
    stream = (PairStream if hp.objective == "dpo" else BatchStream)(examples, hp.batch_size, hp.seed, pad_id, batching)
    events.log(f"Batching: {batching} ({why})")
    return Data(examples=examples, held_out=held_out, stream=stream, pad_id=pad_id, total_steps=total_steps)


def optimizer_for(method: Method, model: torch.nn.Module, spec: TrainSpec) -> torch.optim.Optimizer:
    """The method's own optimiser if it builds one (GaLore), else the one the options name; logged."""
    hp = spec.config.hyperparameters
    own_optimizer = getattr(method, "own_optimizer", None)
    if own_optimizer is not None:
        optimizer = own_optimizer(model, spec.config.method_config, hp.learning_rate, hp.weight_decay)
        events.log(f"Optimizer: {getattr(method, 'OPTIMIZER_NAME', type(optimizer).__name__)}")
        return optimizer
    choice = optimizer_name(spec.config.method_config)
    events.log(f"Optimizer: {choice}")
    return build_optimizer(model, choice, hp.learning_rate, hp.weight_decay)


@dataclass(frozen=True)
class Start:
    """Where the loop starts: after `step` (0 for a fresh run), with the time and loss so far."""

    step: int = 0
    elapsed_seconds: float = 0.0
    resumed: bool = False
    loss: float = float("nan")


def starting_point(spec: TrainSpec, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                   method: Method, stream: BatchStream, total_steps: int) -> Start:
    """The newest complete checkpoint when resuming (loaded into model, optimiser, RNGs and
    `stream`), else step 0 with no checkpoint of an earlier run left over."""
    folder = spec.checkpoints
    debris = checkpoint.remove_debris(folder)
    if debris:
        events.log(f"Removed {len(debris)} incomplete checkpoint folder(s) left by an earlier attempt")
    newest = checkpoint.latest(folder) if spec.resume else None
    found = checkpoint.latest(folder, spec.resume_through) if spec.resume else None
    if newest is not None and found != newest:
        events.log(f"{newest.name} was written but never recorded (its worker died first); "
                   f"resuming from the recorded {found.name if found else 'start'} instead")
    if found is None:
        if checkpoint.remove_all(folder):
            events.log("Starting afresh: removed the checkpoints of an earlier run")
        return Start()
    state = checkpoint.load(found, model=model, optimizer=optimizer, method=method)
    stream.consumed = state.consumed_rows
    events.log(f"Resumed from {found.name}: continuing at step {state.step + 1} of {total_steps}",
               resumed_from=state.step)
    loss = float("nan") if state.loss is None else float(state.loss)
    return Start(step=state.step, elapsed_seconds=state.elapsed_seconds, resumed=True, loss=loss)
