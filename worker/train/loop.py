"""The training loop every method shares, readable top to bottom.

A method module decides what trains (LoRA adapters, the last layers, every
weight) and how the result is saved; this loop only does what is common:
load, batch, step the optimiser on a warmup-then-cosine schedule, report,
save atomically. The loss is computed here rather than inside the model so
that gradient accumulation divides by the token count of the whole step,
not of each micro-batch, and so every method is measured the same way.

Every `checkpoint_every` steps (and when SIGTERM asks it to stop) it writes
a checkpoint (`worker.train.checkpoint`); with `resume` it continues from the
newest one with the same weights, optimiser state, RNG states and data
position, so a resumed run computes what the uninterrupted run would have.
Rows held out with `eval_fraction`/`eval_count` give an evaluation loss
every `eval_every` steps and at the end (`worker.train.evaluate`), and a few
of their prompts are completed every `sample_every` steps
(`worker.train.samples`). Every metric point carries `memory_mb` and
`elapsed_seconds`.

At the end the trained model, in eval mode, scores a fixed probe prompt; the
summary carries its next-token logits so that anyone can check a download
against what training ended with. Methods with a merged download (LoRA, DoRA,
QLoRA) then write it to the spec's `merged_dir`.
"""
from __future__ import annotations

import errno
import gc
import json
import math
import os
import resource
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

from app.catalog.trust import remote_code_allowed
from worker.methods import Method, get_method, load_base, optimizer_name
from worker.methods.optimizers import make_optimizer
from worker.train import checkpoint, events
from worker.train.data import BatchStream, load_examples, split_holdout
from worker.train.evaluate import eval_loss
from worker.train.loss import summed_loss
from worker.train.samples import generate_samples, pick_prompts
from worker.train.spec import TrainSpec
from worker.train.stop import Stopped, StopRequest

GRAD_CLIP = 1.0  # max global grad norm; keeps early random-init steps from blowing up
MIN_LR_RATIO = 0.1  # cosine decays to 10% of the peak rather than to zero
PROBE_PROMPT = "### Instruction:\nConvert to uppercase.\n\n### Input:\nhello\n\n### Response:\n"


@dataclass(frozen=True)
class Fault:
    """A failure to inject after a given step, for chaos tests (env TUNEDECK_FAULT)."""

    action: str  # raise | sigkill | sleep | oom | diskfull
    step: int
    seconds: float = 0.0


FAULT_ACTIONS = frozenset({"raise", "sigkill", "sleep", "oom", "diskfull"})


def parse_fault(text: str) -> Fault | None:
    """`raise@step3`, `sigkill@step5`, `sleep@step4:2.5`, `oom@step3` (out of memory after step 3)
    or `diskfull@step4` (the disk fills while checkpoint-4 is written); a typo fails the run at once."""
    if not text:
        return None
    try:
        action, _, rest = text.partition("@step")
        step_text, _, seconds = rest.partition(":")
        fault = Fault(action=action, step=int(step_text), seconds=float(seconds or 0))
    except ValueError:
        fault = None
    if fault is None or fault.action not in FAULT_ACTIONS:
        raise ValueError(f"bad TUNEDECK_FAULT {text!r}: use raise@stepN, sigkill@stepN, sleep@stepN:SECONDS, "
                         "oom@stepN or diskfull@stepN")
    return fault


def _fill_disk_at_checkpoint(step: int) -> None:
    """The next write of checkpoint-<step>'s weights stops halfway with ENOSPC, like a full disk."""
    from safetensors.torch import save as to_bytes

    real_save_file = checkpoint.save_file
    if getattr(real_save_file, "fault_armed", False):
        return

    def save_file(tensors: dict, filename: str, metadata: dict | None = None) -> None:
        if not Path(filename).parent.name.startswith(f"{checkpoint.TMP_PREFIX}checkpoint-{step}-"):
            return real_save_file(tensors, filename, metadata=metadata)
        data = to_bytes(tensors, metadata=metadata)
        with open(filename, "wb") as handle:
            handle.write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), filename)

    save_file.fault_armed = True  # type: ignore[attr-defined]
    checkpoint.save_file = save_file  # type: ignore[assignment]


def inject_fault(fault: Fault | None, step: int) -> None:
    if fault is not None and fault.action == "diskfull" and step < fault.step:
        _fill_disk_at_checkpoint(fault.step)
    if fault is None or fault.step != step:
        return
    if fault.action == "raise":
        raise RuntimeError(f"injected fault at step {step}")
    if fault.action == "oom":
        raise torch.OutOfMemoryError(
            f"CUDA out of memory. Tried to allocate 2.00 GiB (injected fault at step {step})")
    if fault.action == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(fault.seconds)


def lr_at(step: int, total: int, warmup: int, peak: float) -> float:
    """Learning rate for 1-based `step`: linear warmup, then cosine from peak to MIN_LR_RATIO·peak."""
    if step <= warmup:
        return peak * step / warmup
    progress = (step - warmup - 1) / max(1, total - warmup - 1)
    floor = peak * MIN_LR_RATIO
    return floor + (peak - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def parameter_count(param: torch.Tensor) -> int:
    """Elements of a weight as the model uses it: a bitsandbytes 4-bit weight stores two per
    byte (and its numel counts bytes), so count the shape it dequantises to."""
    quant_state = getattr(param, "quant_state", None)
    shape = getattr(quant_state, "shape", None)
    return math.prod(shape) if shape is not None else param.numel()


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    trainable = sum(parameter_count(p) for p in model.parameters() if p.requires_grad)
    return trainable, sum(parameter_count(p) for p in model.parameters())


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


def _seal_tree(folder: Path) -> None:
    """fsync every file and the folder; make files world-readable (some writers use 0600
    temp files) so that the API, possibly another user, can serve the download."""
    for path in folder.iterdir():
        path.chmod(0o644)
        with path.open("rb") as handle:
            os.fsync(handle.fileno())
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_folder_atomically(out: Path, fill: Callable[[Path], None]) -> Path:
    """`fill` a temp sibling of `out`, fsync, then rename: a download never sees half a folder.

    A previous attempt's finished folder is swapped out, not deleted first,
    so there is always one complete folder at `out` or none.
    """
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        fill(tmp)
        _seal_tree(tmp)
        if out.exists():
            old = out.with_name(f"{out.name}.old-{os.getpid()}")
            os.rename(out, old)
            os.rename(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def save_artifact(
    method: Method,
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    spec: TrainSpec,
    record: dict[str, object],
) -> Path:
    """The method's artifact, the tokenizer and the training record, written atomically to `output_dir`."""

    def fill(tmp: Path) -> None:
        method.save(model, tmp, spec.model_path)
        tokenizer.save_pretrained(str(tmp))
        # The resolved config travels with the weights (nanoGPT does the same).
        (tmp / "tunedeck_training.json").write_text(json.dumps(record, indent=2), encoding="utf-8")

    return write_folder_atomically(spec.output_dir, fill)


def save_merged(method: Method, artifact: Path, spec: TrainSpec) -> Path | None:
    """The merged model folder, for methods that have one and specs that ask for it.

    A failed merge is reported and leaves no merged folder, but does not fail
    the job: the adapter, the main download, is already saved.
    """
    merge = getattr(method, "merge", None)
    if merge is None or spec.merged_dir is None:
        return None
    started = time.perf_counter()
    try:
        merged = merge(artifact, spec.model_path, spec.merged_dir)
    except Exception as exc:  # noqa: BLE001 - see the docstring
        events.log(f"Merged model not written: {type(exc).__name__}: {exc}")
        shutil.rmtree(spec.merged_dir, ignore_errors=True)  # a previous attempt's would not match this adapter
        return None
    events.log(f"Saved merged model to {merged} ({time.perf_counter() - started:.1f} s)")
    return Path(merged)


def build_optimizer(method: Method, model: torch.nn.Module, spec: TrainSpec) -> tuple[torch.optim.Optimizer, str]:
    """The method's own optimiser if it builds one (GaLore), else the one the options name."""
    hp = spec.config.hyperparameters
    own_optimizer = getattr(method, "make_optimizer", None)
    if own_optimizer is not None:
        optimizer = own_optimizer(model, spec.config.method_config, hp.learning_rate, hp.weight_decay)
        return optimizer, str(getattr(method, "OPTIMIZER_NAME", type(optimizer).__name__))
    choice = optimizer_name(spec.config.method_config)
    return make_optimizer(model, choice, hp.learning_rate, hp.weight_decay), choice


def train(spec: TrainSpec) -> Path:
    """Run one job from its spec, emitting events; return the artifact folder.

    With `spec.resume` and a complete checkpoint, the run continues after
    that checkpoint's step with its weights, optimiser state, RNG states and
    data position, so the steps (and, on the CPU, the numbers) continue as
    if it had never stopped. SIGTERM ends it at the next step boundary with a
    checkpoint (`Stopped`).
    """
    stop = StopRequest.install()
    hp = spec.config.hyperparameters
    fault = parse_fault(os.environ.get("TUNEDECK_FAULT", ""))
    hf_logging.disable_progress_bar()  # tqdm bars are noise in a job log; warnings still show
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(hp.seed)  # LoRA's A init and dropout masks draw from this

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
    trainable, total_params = count_parameters(model)
    events.log(
        f"Method {spec.config.method}: trainable parameters {trainable:,} of {total_params:,} "
        f"({100.0 * trainable / total_params:.2f}%)"
    )

    # Padding never reaches the loss or attention, so any id will do when there is no pad token.
    pad_id = next(i for i in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0) if i is not None)
    examples, dropped = load_examples(spec.dataset_path, tokenizer, hp.seq_len)
    examples, held_out = split_holdout(examples, hp.eval_fraction, hp.eval_count, hp.seed)
    total_steps = hp.total_steps(len(examples))
    events.log(
        f"Dataset: {len(examples)} training rows" + (f", {len(held_out)} held out for evaluation" if held_out else "")
        + (f" ({dropped} dropped: prompt fills seq_len)" if dropped else "")
        + f"; {total_steps} steps of {hp.batch_size}×{hp.gradient_accumulation} rows"
    )
    stream = BatchStream(examples, hp.batch_size, hp.seed, pad_id)
    optimizer, optimizer_choice = build_optimizer(method, model, spec)
    events.log(f"Optimizer: {optimizer_choice}")
    trainable_params = [p for p in model.parameters() if p.requires_grad]
    sample_prompts = pick_prompts(held_out, examples) if hp.sample_every else []

    # Where to start: the newest complete checkpoint when resuming, else step 0 with none left over.
    folder = spec.checkpoints
    debris = checkpoint.remove_debris(folder)
    if debris:
        events.log(f"Removed {len(debris)} incomplete checkpoint folder(s) left by an earlier attempt")
    start_step, elapsed_before, resumed, loss_value = 0, 0.0, False, float("nan")
    found = checkpoint.latest(folder) if spec.resume else None
    if found is not None:
        # Last thing before the loop: it restores the RNG states, which building the model drew from.
        state = checkpoint.load(found, model=model, optimizer=optimizer, method=method)
        start_step, elapsed_before, resumed = state.step, state.elapsed_seconds, True
        loss_value = float("nan") if state.loss is None else float(state.loss)
        stream.consumed = state.consumed_rows
        events.log(f"Resumed from {found.name}: continuing at step {start_step + 1} of {total_steps}",
                   resumed_from=start_step)
    elif checkpoint.remove_all(folder):
        events.log("Starting afresh: removed the checkpoints of an earlier run")
    batches = iter(stream)

    def save_checkpoint(
        step: int, loss_value: float, elapsed: float, model: torch.nn.Module, optimizer: torch.optim.Optimizer
    ) -> None:
        started = time.perf_counter()
        path = checkpoint.save(
            folder, step=step, model=model, optimizer=optimizer, method=method, method_name=spec.config.method,
            save_adapter=lambda tmp: method.save(model, tmp, spec.model_path),
            info={
                "job_id": spec.job_id, "total_steps": total_steps, "consumed_rows": stream.consumed,
                "epoch": stream.epoch, "loss": loss_value, "elapsed_seconds": elapsed,
                "schedule": {"kind": "warmup_cosine", "warmup_steps": hp.warmup_steps,
                             "peak_learning_rate": hp.learning_rate, "min_lr_ratio": MIN_LR_RATIO},
            },
        )
        removed = checkpoint.prune(folder, hp.keep_checkpoints)
        events.log(
            f"Saved {path.name} ({time.perf_counter() - started:.2f} s)"
            + (f"; removed checkpoint-{', checkpoint-'.join(map(str, removed))}" if removed else ""),
            checkpoint={"step": step, "name": path.name},
        )

    if stop.requested:  # asked to stop while loading: nothing new to save
        raise Stopped(start_step)
    model.train()
    loop_started = time.perf_counter()
    run_tokens, run_seconds = 0, 0.0
    window_loss, window_tokens, window_seconds, window_steps = 0.0, 0, 0.0, 0
    for step in range(start_step + 1, total_steps + 1):
        started = time.perf_counter()
        lr = lr_at(step, total_steps, hp.warmup_steps, hp.learning_rate)
        for group in optimizer.param_groups:
            group["lr"] = lr

        # Fetch the whole step first: the loss is normalised by its target count.
        micro_batches = [next(batches) for _ in range(hp.gradient_accumulation)]
        n_targets = sum(b.n_targets for b in micro_batches)
        loss_value = 0.0
        for batch in micro_batches:
            loss = summed_loss(model, batch, device) / n_targets
            loss.backward()
            loss_value += loss.item()
        grad_norm = float(torch.nn.utils.clip_grad_norm_(trainable_params, GRAD_CLIP))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

        seconds = time.perf_counter() - started
        tokens = sum(b.n_tokens for b in micro_batches)
        run_tokens, run_seconds = run_tokens + tokens, run_seconds + seconds
        window_loss += loss_value
        window_tokens, window_seconds, window_steps = window_tokens + tokens, window_seconds + seconds, window_steps + 1
        last = step == total_steps
        evaluate = bool(held_out) and (last or (hp.eval_every > 0 and step % hp.eval_every == 0))
        if step % hp.log_every == 0 or last or evaluate:
            # Average over the steps since the last report, so sparse logging still shows the trend.
            mean_loss = window_loss / window_steps
            extra: dict[str, object] = {}
            if evaluate:
                extra["eval_loss"] = eval_loss(model, held_out, hp.batch_size, pad_id, device)
            if resumed:
                extra["resumed"] = True  # the first point after a resume: the charts mark it
                resumed = False
            events.metric(
                step=step,
                total=total_steps,
                loss=mean_loss,
                learning_rate=lr,
                tokens_per_second=window_tokens / max(window_seconds, 1e-9),
                grad_norm=grad_norm,
                epoch=stream.epoch,
                memory_mb=current_memory_mb(device),
                elapsed_seconds=elapsed_before + time.perf_counter() - loop_started,
                **extra,
            )
            events.log(
                f"Step {step}/{total_steps} loss {mean_loss:.4f} lr {lr:.2e} grad norm {grad_norm:.3f}"
                + (f" eval loss {extra['eval_loss']:.4f}" if "eval_loss" in extra else "")
            )
            window_loss, window_tokens, window_seconds, window_steps = 0.0, 0, 0.0, 0
        if sample_prompts and (step % hp.sample_every == 0 or last):
            for sample in generate_samples(model, tokenizer, sample_prompts, device, step, lambda: stop.requested):
                events.log(f"Sample at step {step}: {sample['prompt']!r} → {sample['completion']!r}", sample=sample)
        saved = hp.checkpoint_every > 0 and step % hp.checkpoint_every == 0
        if saved:
            save_checkpoint(step, loss_value, elapsed_before + time.perf_counter() - loop_started, model, optimizer)
        inject_fault(fault, step)
        if stop.requested and not last:
            if not saved:
                save_checkpoint(step, loss_value, elapsed_before + time.perf_counter() - loop_started, model, optimizer)
            events.log(f"Stopped at step {step} of {total_steps} on request; a retry resumes from checkpoint-{step}",
                       stopped={"step": step})
            raise Stopped(step)

    record = {
        "job_id": spec.job_id,
        "base_model": spec.model_path,
        "config": spec.config.model_dump(mode="json"),
        "steps": total_steps,
        "final_loss": loss_value,
    }
    probe = {"prompt": PROBE_PROMPT, "next_token_logits": probe_logits(model, tokenizer, device)}
    artifact = save_artifact(method, model, tokenizer, spec, record)
    events.log(f"Saved {spec.config.method} artifact to {artifact}")
    peak = peak_memory_bytes(device)  # of training, before a merge reloads the base
    # The merge reloads the base from disk: free the trained copy and its optimiser state first.
    del model, optimizer, trainable_params
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    merged = save_merged(method, artifact, spec)
    events.summary(
        trainable_params=trainable,
        total_params=total_params,
        peak_memory_bytes=peak,
        final_loss=loss_value,
        tokens_per_second=run_tokens / max(run_seconds, 1e-9),
        steps=total_steps,
        artifact_dir=str(artifact),
        merged_dir=str(merged) if merged is not None else None,
        probe=probe,
    )
    return artifact
