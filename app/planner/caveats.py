"""What a plan row assumes, and what it could not honour of what was asked.

Why apart: one plan asks every method the same question (checkpointing on,
an optimiser, a precision), but not every method can take every setting:
prefix tuning cannot checkpoint, LoRA jobs have no optimiser choice, GaLore
steps with its own GaLoreAdamW. Such a row is estimated as its job would
really run, says so on the row (`not_applied`), and is left out of the
"cheapest"/"fastest" badges, which compare like with like
(`app.planner.estimate.badges`). The precision recipe a row assumes is named
too (`recipe`): "bf16" means pure-bf16 AdamW states for full fine-tuning,
which is not the mixed-precision recipe most people run.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from app.methods import MethodSpec, get_spec
from app.planner.setup import TrainingSetup

OPTIMIZER_LABELS = {"adamw": "AdamW", "adamw_8bit": "8-bit AdamW", "paged_adamw_8bit": "paged 8-bit AdamW",
                    "sgd": "SGD with momentum", "adafactor": "Adafactor"}


@dataclass(frozen=True)
class PlannedSetup(TrainingSetup):
    """A setup whose optimiser is the job's, not the one the request named (`asked_optimizer`)."""

    asked_optimizer: str | None = None


def job_optimizers(spec: MethodSpec) -> tuple[str, ...]:
    """The optimisers a job of this method can run: its options' choices, else only its own."""
    return spec.optimizers if "optimizer" in spec.options.model_fields else (spec.default_optimizer,)


def as_the_job_runs(setup: TrainingSetup) -> TrainingSetup:
    """An optimiser the method's job cannot take is replaced by the one it would run (and remembered)."""
    if setup.optimizer in job_optimizers(setup.spec):
        return setup
    values = {f.name: getattr(setup, f.name) for f in dataclasses.fields(setup)}
    values.update(optimizer=setup.spec.default_optimizer, asked_optimizer=setup.optimizer)
    return PlannedSetup(**values)


def not_applied(setup: TrainingSetup) -> list[str]:
    """What this row could not honour of the request, each with what it assumed instead."""
    spec = setup.spec
    out = []
    if setup.gradient_checkpointing and not spec.checkpointing:
        out.append(f"estimated without gradient checkpointing: {spec.label.lower()} cannot take it")
    asked = getattr(setup, "asked_optimizer", None)
    if asked is not None:
        own = OPTIMIZER_LABELS.get(setup.optimizer, setup.optimizer)
        choice = ("has no optimiser choice" if len(job_optimizers(spec)) == 1 else
                  "offers " + ", ".join(OPTIMIZER_LABELS.get(o, o) for o in job_optimizers(spec)))
        out.append(f"estimated with {own}, not {OPTIMIZER_LABELS.get(asked, asked)}: a {spec.label} job {choice}")
    return out


def _compute_dtype(setup: TrainingSetup) -> str:
    """QLoRA's matmul dtype: the option when set, else what the method derives from the precision."""
    try:
        from app.methods.qlora import compute_dtype_for  # type: ignore[attr-defined]
    except ImportError:  # an option that is always set (no precision-following default)
        return str(setup.options_dict.get("compute_dtype"))
    return str(compute_dtype_for(setup.options_dict, setup.precision))


def precision_recipe(setup: TrainingSetup) -> str:
    """The dtypes this row assumes, in the words people use for training recipes: "<short>: <detail>"."""
    spec, options = setup.spec, setup.options_dict
    states = OPTIMIZER_LABELS.get(setup.optimizer, setup.optimizer)
    if spec.quantized_base:
        double = "double quantisation; " if options.get("double_quant") else ""
        return (f"4-bit {options.get('quant_type', 'nf4')} base, {_compute_dtype(setup)} matmuls: {double}"
                f"adapters, their gradients and {states} states in fp32")
    if spec.trains_base or spec.trains_last_layers:
        if setup.precision == "bf16":
            return (f"pure bf16, no fp32 master weights: weights, gradients and {states} states in bf16 "
                    "(not the usual mixed-precision recipe; choose mixed for fp32 master weights)")
        if setup.precision == "mixed":
            return (f"mixed precision, fp32 master weights: fp32 weights, gradients and {states} states, "
                    "bf16 autocast compute (the usual recipe)")
        return f"fp32: weights, gradients, {states} states and compute"
    trainable = "fp32" if spec.peft or setup.precision != "bf16" else "bf16"
    base = {"bf16": "bf16", "mixed": "fp32 under bf16 autocast", "fp32": "fp32"}[setup.precision]
    default = " (peft's default)" if spec.peft else ""
    return (f"{base} base, {trainable} adapters: frozen base in {base}; trainable weights, gradients and {states} "
            f"states in {trainable}{default}")


def replans_to_mixed(method: str, precision: str) -> bool:
    """Rows that train base weights in pure bf16 offer the mixed-precision recipe in one click."""
    spec = get_spec(method)
    return precision == "bf16" and (spec.trains_base or spec.trains_last_layers)
