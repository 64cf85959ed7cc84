"""The plan a job is launched with, and what its run measured, side by side.

Why at submission: the estimate is for the exact configuration the job runs
(its method options, micro-batch, sequence length, checkpointing, the
precision the trainer really uses, and its own dataset's rows), frozen in the job row so that later
catalog edits do not rewrite history. A plan that cannot be computed (a hub
model whose config is not reachable) never blocks the job: the reason is
stored instead.
"""
from __future__ import annotations

from typing import Any

from sqlmodel import Session

from app.planner.architecture import Architecture
from app.planner.compute import seconds_for
from app.planner.db_catalog import DbCatalog
from app.planner.estimate import RunLength, instant_estimate
from app.planner.real_data import DEFAULT_BATCHING, DataShape, NoTrainableRows, real_data_estimate, shape_and_summary
from app.planner.service import PlanError, build_setup, bytes_per_token, resolve_architecture
from app.planner.setup import TrainingSetup
from app.queue import CPU_QUEUE
from app.schemas.plan import PlanRequest

CPU_TRAINER_PRECISION = "fp32"  # worker/methods default_load: the CPU trainer loads the base in float32


def _job_data(session: Session, body: Any, setup: TrainingSetup, arch: Architecture, wait: float | None
              ) -> tuple[DataShape, dict[str, Any]] | None:
    """The job's dataset as the trainer will batch it (None when its rows cannot be read here)."""
    from app import storage
    from app.datasets.token_lengths import dataset_lengths
    from app.models import Dataset

    row = session.get(Dataset, body.dataset)
    if row is None:
        return None
    hp = body.hyperparameters
    lengths = dataset_lengths(storage.absolute(row.path), body.model, hp.prompt_format, bytes_per_token(arch),
                              wait=wait)
    try:
        data, summary = shape_and_summary(lengths.rows, setup, hp.batching or DEFAULT_BATCHING, hp.epochs,
                                          hp.max_steps, hp.eval_fraction, hp.eval_count)
    except NoTrainableRows:
        return None  # refused at submission (app.jobs.crud); a plan never blocks on it
    summary.update(counted=lengths.counted, how=lengths.how, prompt_format=lengths.prompt_format)
    return data, summary


def _three_figures(value: float) -> float:
    """A rate to three significant figures: what a prediction can claim, whatever its size."""
    return float(f"{value:.3g}")


def plan_request_for(body: Any, precision: str) -> PlanRequest:
    """The plan request of a job body (`MethodJobCreate`): its one method, shape and options."""
    hp = body.hyperparameters
    return PlanRequest(model=body.model, methods=[body.method], seq_len=hp.seq_len, batch_size=hp.batch_size,
                       gradient_accumulation=hp.gradient_accumulation,
                       gradient_checkpointing=hp.gradient_checkpointing, precision=precision,
                       method_config={body.method: body.method_config.model_dump(mode="json")},
                       objective=getattr(hp, "objective", "sft"))


def job_plan(session: Session, body: Any, on_gpu: bool = False, wait: float | None = None) -> dict[str, Any]:
    """The instant estimate for a job body (`MethodJobCreate`), as stored in `Job.plan`.

    On the job's own dataset: the peak at the widest micro-batch the trainer makes of it, the FLOPs
    of its average step, the trainer's step count (app.planner.real_data). Its options were already
    checked against the model (`app.methods.check_against`), so what is left to fail here is an
    architecture the planner cannot read; the reason is stored. `wait`: at most that many seconds for
    a first count of the dataset's tokens (None, at submission: as long as it takes; a live form passes
    about a second and gets the estimate, labelled, until the count is cached)."""
    hp = body.hyperparameters
    precision = getattr(hp, "precision", None) or ("bf16" if on_gpu else CPU_TRAINER_PRECISION)
    try:
        request = plan_request_for(body, precision)
        catalog = DbCatalog(session)
        arch = resolve_architecture(request, catalog)
        setup = build_setup(request, body.method, arch)
        gpus = catalog.gpus()
        found = _job_data(session, body, setup, arch, wait)
        if found is not None:
            estimate = real_data_estimate(arch, setup, found[0], gpus, catalog.runtime)
        else:
            estimate = instant_estimate(arch, setup, gpus, catalog.runtime, RunLength())
    except PlanError as exc:
        return {"error": f"{'.'.join(map(str, exc.loc))}: {exc.message}"}
    except Exception as exc:  # noqa: BLE001 - an estimate must never stop a launch; say why it is missing
        return {"error": f"{type(exc).__name__}: {exc}"[:500]}
    rows_per_step = setup.batch_size * setup.gradient_accumulation
    if found is not None:  # the real (non-padding) tokens of a step, which the trainer's tokens/s counts
        data = found[0]
        tokens_per_step = round(data.real_tokens / max(1, data.training_rows) * rows_per_step)
    else:
        tokens_per_step = rows_per_step * setup.seq_len
    overhead = estimate["breakdown"]["runtime_overhead"]
    flops = float(estimate["flops_per_step"])
    rates = []
    for gpu, row in zip(gpus, estimate["gpus"]):
        # From the unrounded seconds per step: a rounded 0.001 s step made every demo job "1,024,000 tokens/s".
        seconds = seconds_for(flops, gpu.bf16_tflops, gpu.utilisation_for(body.method))  # calibrated where measured
        rates.append({"name": row["name"], "fits": row["fits"],
                      "tokens_per_second": _three_figures(tokens_per_step / seconds) if seconds > 0 else None})
    return {
        "mode": "instant",
        "method": body.method,
        "precision": precision,
        "peak_bytes": estimate["peak_bytes"],
        "tensor_peak_bytes": estimate["peak_bytes"] - overhead,
        "breakdown": estimate["breakdown"],
        "peak_phase": estimate["peak_phase"],
        "trainable_params": estimate["trainable_params"],
        "total_params": estimate["total_params"],
        "flops_per_step": estimate["flops_per_step"],
        "tokens_per_step": tokens_per_step,
        "steps": found[0].steps if found is not None else None,
        "dataset_lengths": found[1] if found is not None else None,
        "gpus": rates,
    }


def job_measured(job: Any) -> dict[str, Any] | None:
    """What the run measured (None until it reports), and what kind of peak that is."""
    summary = job.summary or {}
    metrics = job.metrics or {}
    peak = job.peak_memory_bytes if job.peak_memory_bytes is not None else summary.get("peak_memory_bytes")
    throughput = summary.get("tokens_per_second", metrics.get("tokens_per_second"))
    if peak is None and throughput is None:
        return None
    return {
        "peak_memory_bytes": peak,
        "peak_kind": "process_rss" if job.queue == CPU_QUEUE else "cuda_max_allocated",
        "tokens_per_second": throughput,
        "trainable_params": summary.get("trainable_params"),
        "final": bool(summary),
    }


def achieved_tflops(plan: dict[str, Any] | None, measured: dict[str, Any] | None) -> float | None:
    """Predicted FLOPs per token × measured tokens/s: the compute the run really sustained."""
    if not plan or not measured or "flops_per_step" not in plan or not measured.get("tokens_per_second"):
        return None
    return plan["flops_per_step"] / plan["tokens_per_step"] * measured["tokens_per_second"] / 1e12
