"""What the loop reports: parameter counts, memory, progress points, samples and the final probe.

Numbers a user compares across methods and machines are measured here the
same way for every method: trainable parameters as the model uses them (a
4-bit weight counts its dequantised shape), memory as the chart shows it,
and loss and throughput averaged over the steps since the last point so that
sparse logging still shows the trend.
"""
from __future__ import annotations

import gc
import math
import os
import resource
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from worker.train import events
from worker.train.samples import generate_samples
from worker.train.stop import StopRequest

PROBE_PROMPT = "### Instruction:\nConvert to uppercase.\n\n### Input:\nhello\n\n### Response:\n"


def parameter_count(param: torch.Tensor) -> int:
    """Elements of a weight as the model uses it: a bitsandbytes 4-bit weight stores two per
    byte (and its numel counts bytes), so count the shape it dequantises to."""
    quant_state = getattr(param, "quant_state", None)
    shape = getattr(quant_state, "shape", None)
    return math.prod(shape) if shape is not None else param.numel()


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    trainable = sum(parameter_count(p) for p in model.parameters() if p.requires_grad)
    return trainable, sum(parameter_count(p) for p in model.parameters())


def log_parameters(method_name: str, model: torch.nn.Module) -> tuple[int, int]:
    """Log how much of the model the method trains; returns (trainable, total) for the summary."""
    trainable, total = count_parameters(model)
    events.log(
        f"Method {method_name}: trainable parameters {trainable:,} of {total:,} "
        f"({100.0 * trainable / total:.2f}%)"
    )
    return trainable, total


def probe_logits(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, device: torch.device) -> list[float]:
    """Next-token logits (full vocabulary) after PROBE_PROMPT, in eval mode, without gradients."""
    batch = tokenizer(PROBE_PROMPT, return_tensors="pt")
    model.eval()
    with torch.no_grad():
        logits = model(
            input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)
        ).logits
    return logits[0, -1].float().tolist()


def peak_memory_bytes(device: torch.device) -> int:
    """On CUDA the allocator's peak; on the CPU the process's peak RSS (Linux reports KiB)."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def current_memory_mb(device: torch.device) -> float:
    """Memory in use now, for the chart: allocated tensors on CUDA, resident set size on the CPU."""
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device) / 2**20
    try:
        with open("/proc/self/statm", encoding="ascii") as handle:
            resident_pages = int(handle.read().split()[1])
        return resident_pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return peak_memory_bytes(device) / 2**20


def free_memory(device: torch.device) -> None:
    """Hand freed tensors back (to the CUDA driver too), e.g. before the merge loads a second model."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


@dataclass
class Meter:
    """Loss, tokens and step time since the last progress point, tokens and time over the run,
    and the clock of the job (which a resumed attempt continues)."""

    elapsed_before: float = 0.0  # training time of the job's earlier attempts
    started: float = field(default_factory=time.perf_counter)
    loss: float = 0.0
    tokens: int = 0
    seconds: float = 0.0
    steps: int = 0
    run_tokens: int = 0
    run_seconds: float = 0.0

    def add(self, loss: float, tokens: int, seconds: float) -> None:
        self.run_tokens, self.run_seconds = self.run_tokens + tokens, self.run_seconds + seconds
        self.loss += loss
        self.tokens, self.seconds, self.steps = self.tokens + tokens, self.seconds + seconds, self.steps + 1

    def run_tokens_per_second(self) -> float:
        return self.run_tokens / max(self.run_seconds, 1e-9)

    def elapsed(self) -> float:
        """Training time over every attempt of this job: the chart's x axis, the checkpoint's clock."""
        return self.elapsed_before + time.perf_counter() - self.started


def report_progress(
    meter: Meter, *, step: int, total: int, learning_rate: float, grad_norm: float, epoch: float,
    device: torch.device, resumed: bool, eval_loss: float | None = None, eval_exact_match: float | None = None,
    **objective_metrics: float | None,
) -> None:
    """One metric point and its log line, averaged over the steps since the last one (then reset).

    `objective_metrics`: the objective's own (DPO's rewards: the last step's, and the held-out ones)."""
    mean_loss = meter.loss / meter.steps
    extra: dict[str, object] = {k: v for k, v in objective_metrics.items() if v is not None}
    if eval_loss is not None:
        extra["eval_loss"] = eval_loss
    if eval_exact_match is not None:
        extra["eval_exact_match"] = eval_exact_match
    if resumed:
        extra["resumed"] = True  # the first point after a resume: the charts mark it
    events.metric(
        step=step,
        total=total,
        loss=mean_loss,
        learning_rate=learning_rate,
        tokens_per_second=meter.tokens / max(meter.seconds, 1e-9),
        grad_norm=grad_norm,
        epoch=epoch,
        memory_mb=current_memory_mb(device),
        elapsed_seconds=meter.elapsed(),
        **extra,
    )
    events.log(
        f"Step {step}/{total} loss {mean_loss:.4f} lr {learning_rate:.2e} grad norm {grad_norm:.3f}"
        + (f" eval loss {eval_loss:.4f}" if eval_loss is not None else "")
        + (f" exact match {100 * eval_exact_match:.1f}%" if eval_exact_match is not None else "")
        + "".join(f" {k.replace('_', ' ')} {v:.3f}" for k, v in objective_metrics.items()
                  if v is not None and k.endswith("reward_accuracy"))
    )
    meter.loss, meter.tokens, meter.seconds, meter.steps = 0.0, 0, 0.0, 0


def log_baseline(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, held_out: list[Any],
                 hp: Any, pad_id: int, device: torch.device, score: Any) -> dict[str, float | None]:
    """The base model's held-out scores before the first step (none without held-out rows): the
    point training is measured from, so the first job on a real model shows what it changed.
    `score` is the objective's (worker.train.objectives)."""
    if not held_out:
        return {}
    scores = score(model, tokenizer, held_out, hp, pad_id, device)
    match = scores.get("eval_exact_match")
    accuracy = scores.get("eval_reward_accuracy")
    events.log(f"Held-out before training: loss {scores['eval_loss']:.4f}"
               + (f", exact match {100 * match:.1f}%" if match is not None else "")
               + (f", reward accuracy {100 * accuracy:.1f}%" if accuracy is not None else ""), baseline=scores)
    return scores


def log_samples(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, prompts: list[list[int]],
                device: torch.device, step: int, stop: StopRequest) -> None:
    """Greedy completions of the sample prompts, one log line each (cut short by a stop request)."""
    for sample in generate_samples(model, tokenizer, prompts, device, step, lambda: stop.requested):
        events.log(f"Sample at step {step}: {sample['prompt']!r} → {sample['completion']!r}", sample=sample)
