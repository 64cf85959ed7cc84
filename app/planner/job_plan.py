"""The plan a job is launched with, and what its run measured, side by side.

Why at submission: the estimate is for the exact configuration the job runs
(its method options, micro-batch, sequence length, checkpointing, and the
precision the trainer really uses), frozen in the job row so that later
catalog edits do not rewrite history. A plan that cannot be computed (a hub
model whose config is not reachable) never blocks the job: the reason is
stored instead.
"""
from __future__ import annotations

from typing import Any

from sqlmodel import Session

from app.planner.db_catalog import DbCatalog
from app.planner.estimate import RunLength, instant_estimate
from app.planner.service import PlanError, build_setup, resolve_architecture
from app.queue import CPU_QUEUE
from app.schemas.plan import PlanRequest

CPU_TRAINER_PRECISION = "fp32"  # worker/methods default_load: the CPU trainer loads the base in float32


def job_plan(session: Session, body: Any, on_gpu: bool = False) -> dict[str, Any]:
    """The instant estimate for a job body (`MethodJobCreate`), as stored in `Job.plan`.

    Its options were already checked against the model (`app.methods.check_against`), so what is
    left to fail here is an architecture the planner cannot read; the reason is stored."""
    hp = body.hyperparameters
    precision = "bf16" if on_gpu else CPU_TRAINER_PRECISION
    try:
        request = PlanRequest(model=body.model, methods=[body.method], seq_len=hp.seq_len, batch_size=hp.batch_size,
                              gradient_accumulation=hp.gradient_accumulation,
                              gradient_checkpointing=hp.gradient_checkpointing, precision=precision,
                              method_config={body.method: body.method_config.model_dump(mode="json")})
        catalog = DbCatalog(session)
        arch = resolve_architecture(request, catalog)
        setup = build_setup(request, body.method, arch)
        estimate = instant_estimate(arch, setup, catalog.gpus(), catalog.runtime, RunLength())
    except PlanError as exc:
        return {"error": f"{'.'.join(map(str, exc.loc))}: {exc.message}"}
    except Exception as exc:  # noqa: BLE001 - an estimate must never stop a launch; say why it is missing
        return {"error": f"{type(exc).__name__}: {exc}"[:500]}
    tokens_per_step = setup.batch_size * setup.seq_len * setup.gradient_accumulation
    overhead = estimate["breakdown"]["runtime_overhead"]
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
        "gpus": [{"name": g["name"], "fits": g["fits"],
                  "tokens_per_second": round(tokens_per_step / g["seconds"], 1) if g["seconds"] else None}
                 for g in estimate["gpus"]],
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
