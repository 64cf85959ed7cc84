"""The traced estimator: one real training step of the real code, on fake tensors.

Why: the closed form in `app.planner.memory` encodes what transformers, peft
and the optimisers allocate today; this runs them. The model is built on the
`meta` device, its method applied with the worker's own builders, its weights
swapped for fake tensors; then a forward, the loss the worker computes, a
backward and `optimizer.step()` run under `FakeTensorMode`, with
`LiveBytes` counting live storage and FLOPs. No
weights are loaded, nothing is computed, no GPU is needed.

The loss is the worker's own (`worker.train.loss.summed_loss`), on the
planner's worst case: a full batch_size × seq_len batch whose every position
after the first is a target. Its targets-only output layer picks positions
with a boolean mask, whose size fake tensors cannot know; `_AllTargets`
resolves those picks from what the trace itself put in the labels.

What is made to look like a GPU run: AdamW and SGD use their `foreach`
implementations (the CUDA default, whose `step()` allocates one temporary per
state), dropout uses the fused `native_dropout` (a 1-byte mask, not the CPU
fallback's full-size float noise), attention goes through SDPA (flash-like:
O(s) memory). The optimiser's states are created by a warm-up step first,
since from the second step on they are alive through the forward pass; with
gradient accumulation the gradients are too. bitsandbytes' paged states live
in managed memory: counted apart ("paged"), not in the device peak.

Imports torch: call it from the worker (the `planning` queue), never from the
web process.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from app.methods.qlora import autocast_for
from app.planner.architecture import Architecture
from app.planner.setup import TrainingSetup
from worker.train import loss as worker_loss
from worker.train.data import Batch
from worker.trace.fakes import (_AllTargets, _fused_dropout, _GroupedMmAnyDtype, _loss_category,
                                _unpacked_batches, worst_case_batch)
from worker.trace.memory import LiveBytes
from worker.trace.model import DTYPES, apply_method, build_meta_model, fakeify, galore_param_groups

PAGED_MIN_NUMEL = 100_000  # bitsandbytes pages only tensors of at least 1e5 elements
SGD_MOMENTUM = 0.9  # as worker.methods.optimizers


@dataclass
class TraceResult:
    """The tensor peak of one traced step and what it was made of."""

    peak_bytes: int
    breakdown: dict[str, int]
    peak_phase: str
    phase_peaks: dict[str, int]
    flops_per_micro_batch: int
    trainable_params: int
    total_params: int
    paged_bytes: int
    seconds: float
    marks: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _param_groups(params: list[torch.nn.Parameter]) -> list[dict[str, Any]]:
    """The worker's two groups: >= 2-D weights with decay, the rest without (foreach runs per group)."""
    groups = [{"params": [p for p in params if p.dim() >= 2]}, {"params": [p for p in params if p.dim() < 2]}]
    return [g for g in groups if g["params"]]


def _optimizer(model: torch.nn.Module, setup: TrainingSetup, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    name = setup.optimizer
    if setup.spec.low_rank_gradients:
        import galore_torch

        groups = galore_param_groups(model, setup)
        if name in {"adamw_8bit", "paged_adamw_8bit"}:
            return galore_torch.GaLoreAdamW8bit(groups, lr=1e-4)
        if name == "adafactor":
            return galore_torch.GaLoreAdafactor(groups, lr=1e-4, scale_parameter=False, relative_step=False)
        from worker.methods.galore import own_optimizer  # the job's own GaLoreAdamW

        return own_optimizer(model, setup.options, 1e-4, 0.0)  # type: ignore[arg-type]
    groups = _param_groups(params)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=1e-4, foreach=True)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=1e-4, momentum=SGD_MOMENTUM, foreach=True)
    if name == "adafactor":
        from transformers.optimization import Adafactor

        return Adafactor(groups, lr=1e-4, scale_parameter=False, relative_step=False, warmup_init=False)
    import bitsandbytes as bnb  # paged or not, the same states; paging is accounted below
    from torch.utils._python_dispatch import _disable_current_modes

    with _disable_current_modes():  # its quantisation maps are built from real numbers
        return bnb.optim.AdamW8bit(groups, lr=1e-4)


def trace_optimizer(model: torch.nn.Module,
                   setup: TrainingSetup) -> tuple[torch.optim.Optimizer, list[torch.nn.Parameter]]:
    """The job's optimiser over the trainable parameters, as the trace (and a measured run) uses it."""
    params = [p for p in model.parameters() if p.requires_grad]
    return _optimizer(model, setup, params), params


def warm_up(opt: torch.optim.Optimizer, params: list[torch.nn.Parameter], setup: TrainingSetup,
            live: LiveBytes | None = None) -> None:
    """Create the optimiser's states as after the first step, and the gradients that persist."""
    if live is not None:
        live.category = "gradients"
    for p in params:
        p.grad = torch.zeros_like(p)
    if live is not None:
        live.category = "optimizer"
    opt.step()
    for p, state in opt.state.items():
        if live is None:
            break
        if setup.optimizer == "paged_adamw_8bit" and p.numel() >= PAGED_MIN_NUMEL:
            for value in state.values():
                if isinstance(value, torch.Tensor) and value.numel() > 1:
                    live.move(value, "paged")
        if setup.spec.low_rank_gradients and "projector" in state:
            state["step"] = int(setup.options_dict["update_proj_gap"])  # trace a step that recomputes the SVD
    opt.zero_grad(set_to_none=setup.gradient_accumulation == 1)


def uses_autocast(setup: TrainingSetup) -> bool:
    """mixed, and QLoRA computing in bf16/fp16, run the step under autocast (as the HF Trainer's bf16=True)."""
    return setup.precision == "mixed" or (
        setup.spec.quantized_base and autocast_for(setup.options_dict, setup.precision) is not None)


def training_step(model: torch.nn.Module, opt: torch.optim.Optimizer, params: list[torch.nn.Parameter],
                  batch: Batch, autocast: bool, phase: Callable[[str], None] = lambda name: None,
                  loss_fn: Callable[[torch.nn.Module, Batch, torch.device], torch.Tensor] | None = None) -> None:
    """One micro-batch and one optimiser step, with the worker's loss (`worker.train.loss.summed_loss`).

    `loss_fn` replaces it only to measure another loss on the same step (benchmarks/loss_memory.py).
    """
    phase("forward")
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss = (loss_fn or worker_loss.summed_loss)(model, batch, batch.input_ids.device)
    phase("backward")
    loss.backward()
    del loss
    phase("optimizer")
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)


def trace_step(arch: Architecture, setup: TrainingSetup, model: torch.nn.Module | None = None) -> TraceResult:
    """Trace one micro-batch's forward and backward and one optimiser step; return the tensor peak.

    `model`: a meta model already set up some other way (a test's stock-library reference),
    instead of the job's own builders; the step, loss and optimiser are the same.
    """
    started = time.perf_counter()
    dtype = DTYPES[setup.precision]
    if model is None:
        model = apply_method(build_meta_model(arch, dtype), arch, setup, dtype)
    model.train()
    live = LiveBytes()
    notes: list[str] = []
    if setup.spec.quantized_base:
        notes.append("traced: 4-bit base layers emulated (packed NF4 weights, transient dequantised weight)")
    b, s = setup.batch_size, setup.seq_len
    with FakeTensorMode(allow_non_fake_inputs=True), _GroupedMmAnyDtype(), live, _fused_dropout(), \
            _unpacked_batches(), _loss_category(live):
        fakeify(model, live.move)
        opt, params = trace_optimizer(model, setup)
        warm_up(opt, params, setup, live)
        for p in params:
            p.register_post_accumulate_grad_hook(lambda q: live.move(q.grad, "gradients"))

        def enter_head(_module: Any, args: tuple[Any, ...]) -> None:
            live.category = "logits"
            if args and isinstance(args[0], torch.Tensor) and args[0].requires_grad:
                args[0].register_hook(lambda g: setattr(live, "category", "activations"))

        def phase(name: str) -> None:
            live.mark({"forward": "static", "backward": "forward_end", "optimizer": "backward_end"}[name])
            live.phase = name
            live.category = {"forward": "activations", "backward": "logits", "optimizer": "optimizer"}[name]
            live.count_flops = name != "optimizer"

        handle = model.get_output_embeddings().register_forward_pre_hook(enter_head)
        batch = worst_case_batch(torch.randint(0, arch.vocab_size, (b, s)))
        live.reset_peak()
        with _AllTargets(batch.labels):
            training_step(model, opt, params, batch, uses_autocast(setup), phase)
        handle.remove()
    total = arch_total_params(arch)  # the base model's, as the instant estimate reports it
    return TraceResult(
        peak_bytes=live.peak, breakdown=dict(live.peak_breakdown), peak_phase=live.peak_phase,
        phase_peaks=dict(live.phase_peaks), flops_per_micro_batch=live.flops,
        trainable_params=sum(p.numel() for p in params), total_params=total,
        paged_bytes=live.by_category.get("paged", 0), seconds=time.perf_counter() - started, notes=notes,
        marks=dict(live.marks),
    )


def arch_total_params(arch: Architecture) -> int:
    """Base model parameters, tied embeddings once (adapters are `trainable_params`)."""
    from app.planner.params import count_params

    return count_params(arch).total
