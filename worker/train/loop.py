"""The training loop every method shares, readable top to bottom.

A method module decides what trains (LoRA adapters, the last layers, every
weight) and how the result is saved; this loop only does what is common:
load, batch, step the optimiser on a warmup-then-cosine schedule, report,
save atomically. What a step optimises is the job's objective
(`worker.train.objectives`: supervised, the loss on the answers normalised
over the whole step, `worker.train.step`; or DPO, `worker.train.dpo`), the
same for every method.

Every `checkpoint_every` steps (and when SIGTERM asks it to stop) it writes
a checkpoint (`worker.train.checkpoint`); with `resume` it continues from the
newest one with the same weights, optimiser state, RNG states and data
position, so a resumed run computes what the uninterrupted run would have.
Rows held out with `eval_fraction`/`eval_count` give an evaluation loss and
the exact match of greedy completions every `eval_every` steps and at the end
(`worker.train.evaluate`; the summary carries the final pair), and a few of
their prompts are completed every `sample_every` steps
(`worker.train.samples`). Every metric point carries `memory_mb` and
`elapsed_seconds`.

At the end the trained model, in eval mode, scores a fixed probe prompt; the
summary carries its next-token logits so that anyone can check a download
against what training ended with. Methods with a merged download (LoRA, DoRA,
QLoRA) then write it to the spec's `merged_dir`.

What the loop calls lives beside it: `prepare` (model, data, optimiser,
where to start), `report` (parameter counts, memory, progress points, the
probe), `artifacts` (checkpoints, the artifact, the merged model) and
`faults` (failures injected on purpose for the chaos tests).
"""
from __future__ import annotations

import math
import os
import time
from pathlib import Path

import torch
from transformers.utils import logging as hf_logging

from worker.train import events
from worker.train.artifacts import Checkpoints, save_artifact, save_merged, training_record
from worker.train.health import Health
from worker.train.faults import Fault, inject_fault, parse_fault  # noqa: F401 - Fault: tests import it from here
from worker.train.objectives import objective_for
from worker.train.prepare import load_data, load_model, optimizer_for, starting_point
from worker.train.report import (PROBE_PROMPT, Meter, free_memory, log_baseline, log_parameters, log_samples,
                                 peak_memory_bytes, probe_logits, report_progress)
from worker.train.samples import pick_prompts
from worker.train.spec import TrainSpec
from worker.train.stop import Stopped, StopRequest

MIN_LR_RATIO = 0.1  # cosine decays to 10% of the peak rather than to zero


def lr_at(step: int, total: int, warmup: int, peak: float) -> float:
    """Learning rate for 1-based `step`: linear warmup, then cosine from peak to MIN_LR_RATIO·peak."""
    if step <= warmup:
        return peak * step / warmup
    progress = (step - warmup - 1) / max(1, total - warmup - 1)
    floor = peak * MIN_LR_RATIO
    return floor + (peak - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def schedule(warmup: int, peak: float) -> dict[str, object]:
    """`lr_at`'s parameters, saved in each checkpoint (the schedule has no other state)."""
    return {"kind": "warmup_cosine", "warmup_steps": warmup, "peak_learning_rate": peak, "min_lr_ratio": MIN_LR_RATIO}


def train(spec: TrainSpec) -> Path:
    """Run one job from its spec, emitting events; return the artifact folder.

    With `spec.resume` and a complete checkpoint, the run continues after that checkpoint's step with its
    weights, optimiser state, RNG states and data position, so the steps (and, on the CPU, the numbers)
    continue as if it had never stopped. SIGTERM ends it at the next step with a checkpoint (`Stopped`)."""
    stop = StopRequest.install()
    hp = spec.config.hyperparameters
    fault = parse_fault(os.environ.get("TUNEDECK_FAULT", ""))
    hf_logging.disable_progress_bar()  # tqdm bars are noise in a job log; warnings still show
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(hp.seed)  # LoRA's A init and dropout masks draw from this

    tokenizer, method, model = load_model(spec, device)
    trainable, total_params = log_parameters(spec.config.method, model)
    data = load_data(spec, tokenizer, model)
    objective = objective_for(spec, model, device)
    stream, held_out, total_steps = data.stream, data.held_out, data.total_steps
    optimizer = optimizer_for(method, model, spec)
    trainable_params = [p for p in model.parameters() if p.requires_grad]
    sample_prompts = pick_prompts(held_out, data.examples) if hp.sample_every else []
    # Last thing before the loop: a resume restores the RNG states, which building the model drew from.
    start = starting_point(spec, model, optimizer, method, stream, total_steps)
    batches = iter(stream)
    checkpoints = Checkpoints(spec, method, stream, total_steps, schedule(hp.warmup_steps, hp.learning_rate))
    if stop.requested:  # asked to stop while loading: nothing new to save
        raise Stopped(start.step)
    model.train()
    meter, health = Meter(elapsed_before=start.elapsed_seconds), Health(hp, objective.loss_vocab_size)
    resumed, loss_value = start.resumed, start.loss
    final_eval: dict[str, float | None] = {}  # the last evaluation's scores, for the summary
    score = lambda: objective.scores(model, tokenizer, held_out, hp, data.pad_id, device)  # noqa: E731
    before = {} if start.resumed else log_baseline(model, tokenizer, held_out, hp, data.pad_id, device,
                                                   objective.scores)
    for step in range(start.step + 1, total_steps + 1):
        started = time.perf_counter()
        lr = lr_at(step, total_steps, hp.warmup_steps, hp.learning_rate)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss_value, grad_norm, tokens, step_metrics = objective.step(
            model, optimizer, batches, hp.gradient_accumulation, trainable_params, device)
        health.check(step, loss_value, grad_norm, lr)  # a NaN loss or exploding gradients end the job here
        meter.add(loss_value, tokens, time.perf_counter() - started)

        last = step == total_steps
        evaluate = bool(held_out) and (last or (hp.eval_every > 0 and step % hp.eval_every == 0))
        if step % hp.log_every == 0 or last or evaluate:
            final_eval = score() if evaluate else final_eval
            report_progress(meter, step=step, total=total_steps, learning_rate=lr, grad_norm=grad_norm,
                            epoch=stream.epoch, device=device, resumed=resumed, **step_metrics,
                            **(final_eval if evaluate else {}))
            resumed = False  # only the first point after a resume is marked
        if sample_prompts and (step % hp.sample_every == 0 or last):
            log_samples(model, tokenizer, sample_prompts, device, step, stop)
        saved = hp.checkpoint_every > 0 and step % hp.checkpoint_every == 0
        if saved:
            checkpoints.save(step, loss_value, meter.elapsed(), model, optimizer)
        inject_fault(fault, step)
        if stop.requested and not last:
            if not saved:
                checkpoints.save(step, loss_value, meter.elapsed(), model, optimizer)
            events.log(f"Stopped at step {step} of {total_steps} on request; a retry resumes from checkpoint-{step}",
                       stopped={"step": step})
            raise Stopped(step)

    if held_out and not final_eval:  # resumed from a checkpoint of the last step: nothing was evaluated yet
        final_eval = score()
    probe = {"prompt": PROBE_PROMPT, "next_token_logits": probe_logits(model, tokenizer, device)}
    artifact = save_artifact(method, model, tokenizer, spec, training_record(spec, total_steps, loss_value))
    events.log(f"Saved {spec.config.method} artifact to {artifact}")
    peak = peak_memory_bytes(device)  # of training, before a merge reloads the base
    # The merge reloads the base from disk: free the trained copy and its optimiser state first.
    del model, optimizer, trainable_params
    free_memory(device)
    merged = save_merged(method, artifact, spec)
    events.summary(trainable_params=trainable, total_params=total_params, peak_memory_bytes=peak,
                   final_loss=loss_value, tokens_per_second=meter.run_tokens_per_second(), steps=total_steps,
                   artifact_dir=str(artifact), merged_dir=str(merged) if merged is not None else None, probe=probe,
                   eval_before=before, **final_eval)
    return artifact
