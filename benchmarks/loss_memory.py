"""The targets-only loss on a real model: measured peak of one step, old loss against new, and the planner.

Issue 13's acceptance: on SmolLM2-135M-Instruct (LoRA r 8 on q and v, float32
as the worker trains on the CPU, a worst-case batch: every position after the
first a target), the PyTorch-profiler-measured peak of one training step with
the worker's loss (`worker.train.loss.summed_loss`: chunked output layer and
cross-entropy over the target positions) is at least one full float32 logits
tensor (batch × seq_len × vocabulary × 4 bytes) below the same step with the
old full-logits loss (`_full_logits_loss`), and the planner predicts the new
step within 5 %: traced (the real code on fake tensors) and instant (the
closed form), both from the architecture read from the model's config.json.

Both steps run on one model, one optimiser (states made by a warm-up step)
and one batch, with `training_step` itself, under the profiler; the peak is
the profiler's memory timeline summed as benchmarks/plan_measured.py does.

    .venv/bin/python -m benchmarks.loss_memory [MODEL_FOLDER]
"""
from __future__ import annotations

import json
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

from benchmarks.plan_measured import measured_peak

MODEL_NAME = "smollm2-135m-instruct"
LORA = {"r": 8, "target_modules": ["q_proj", "v_proj"]}
BATCH_SIZE, SEQ_LEN = 2, 256  # 510 target rows: one chunk (the chunking itself: tests/test_targets_only_loss.py)


@dataclass(frozen=True)
class LossMemory:
    """Measured peaks of one step with each loss, one float32 logits tensor, and the planner's predictions."""

    old_peak: int  # measured, full-logits loss
    new_peak: int  # measured, the worker's targets-only loss
    fp32_logits: int  # batch × seq_len × vocabulary × 4 bytes
    traced: int  # the traced planner's peak for the new step
    instant: int  # the closed form's

    @property
    def drop(self) -> int:
        return self.old_peak - self.new_peak

    def error(self, predicted: int) -> float:
        return (predicted - self.new_peak) / self.new_peak


def default_folder() -> Path | None:
    """The converted test-cache folder (tests/helpers/smollm2.py), else DATA_DIR/models' copy."""
    root = Path(__file__).resolve().parents[1]
    for folder in sorted((root / "var" / "test-cache").glob(f"smollm2-*/{MODEL_NAME}")):
        if (folder / "config.json").is_file():
            return folder
    data_dir = os.environ.get("DATA_DIR")
    if data_dir and (Path(data_dir) / "models" / MODEL_NAME / "config.json").is_file():
        return Path(data_dir) / "models" / MODEL_NAME
    return None


def measure(folder: Path, batch_size: int = BATCH_SIZE, seq_len: int = SEQ_LEN) -> LossMemory:
    """Run one profiled step with each loss on the model in `folder`, and ask the planner about the new one."""
    import torch
    from torch.profiler import ProfilerActivity, profile
    from transformers import AutoModelForCausalLM

    from app.planner.architecture import Architecture
    from app.planner.memory import estimate_memory
    from app.planner.setup import TrainingSetup
    from worker.train.data import Batch
    from worker.train.loss import _full_logits_loss, summed_loss
    from worker.trace.model import DTYPES, apply_method
    from worker.trace.step import (_fused_dropout, _unpacked_batches, trace_optimizer, trace_step, training_step,
                                   uses_autocast, warm_up, worst_case_batch)

    arch = Architecture.from_config(json.loads((folder / "config.json").read_text(encoding="utf-8")))
    setup = TrainingSetup.build("lora", LORA, seq_len=seq_len, batch_size=batch_size, precision="fp32")
    traced = trace_step(arch, setup).peak_bytes
    instant = estimate_memory(arch, setup).peak

    def full_logits(model: torch.nn.Module, batch: Batch, device: torch.device) -> torch.Tensor:
        return _full_logits_loss(model, batch, device, batch.labels[:, 1:].to(device))

    torch.manual_seed(0)
    dtype = DTYPES[setup.precision]
    model = apply_method(AutoModelForCausalLM.from_pretrained(folder, dtype=dtype), arch, setup, dtype)
    model.train()
    peaks: dict[str, int] = {}
    with _fused_dropout(), _unpacked_batches():
        opt, params = trace_optimizer(model, setup)
        warm_up(opt, params, setup)
        batch = worst_case_batch(torch.randint(0, arch.vocab_size, (batch_size, seq_len)))
        for name, loss_fn in (("old", full_logits), ("new", summed_loss)):
            with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True,
                         with_stack=False) as prof:
                training_step(model, opt, params, batch, uses_autocast(setup), loss_fn=loss_fn)
            peaks[name] = measured_peak(prof)
    return LossMemory(old_peak=peaks["old"], new_peak=peaks["new"],
                      fp32_logits=batch_size * seq_len * arch.vocab_size * 4, traced=traced, instant=instant)


def main() -> None:
    warnings.filterwarnings("ignore")
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else default_folder()
    if folder is None:
        sys.exit(f"no {MODEL_NAME} folder: pass one, or run a test using the `smollm2` fixture once to convert it")
    r = measure(folder)
    mb = 1e6
    print(f"SmolLM2-135M-Instruct, LoRA r 8 on q,v, fp32, batch {BATCH_SIZE} x seq_len {SEQ_LEN}")
    print(f"measured peak, old full-logits loss   {r.old_peak / mb:9.1f} MB")
    print(f"measured peak, new targets-only loss  {r.new_peak / mb:9.1f} MB")
    print(f"drop                                  {r.drop / mb:9.1f} MB = {r.drop / r.fp32_logits:.2f}"
          f" x one fp32 logits tensor ({r.fp32_logits / mb:.1f} MB)")
    print(f"planner, traced                       {r.traced / mb:9.1f} MB ({100 * r.error(r.traced):+.2f}%)")
    print(f"planner, instant                      {r.instant / mb:9.1f} MB ({100 * r.error(r.instant):+.2f}%)")
    ok = r.drop >= r.fp32_logits and abs(r.error(r.traced)) <= 0.05 and abs(r.error(r.instant)) <= 0.05
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
