"""Predicted against measured for every finished job, per GPU kind and method, and the calibration it supports.

Why from the job rows: each job stores the plan it was launched with (`Job.plan`,
app/planner/job_plan.py) and what its run measured (`Job.summary`,
`Job.peak_memory_bytes`), so the history needs no table of its own and cannot
drift from the jobs page.

Like with like: the plan's *tensor* peak (no CUDA context, no allocator slack)
is held against `torch.cuda.max_memory_allocated`, which counts tensors too.
A CPU worker measures the process's peak RSS (interpreter, libraries and
tensors): it is listed, marked as RSS, and never used to calibrate memory.
Throughput is compared as utilisation: predicted FLOPs per token × measured
tokens/s over the GPU's dense bf16 peak.

The rule is bounded: a figure is calibrated only from at least MIN_RUNS runs,
to the median, clamped (TENSOR_RATIO_BOUNDS, UTILISATION_BOUNDS), so one odd
run cannot move a plan far.
"""
from __future__ import annotations

import re
import statistics
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from app.models import Job, JobStatus, utcnow
from app.planner.catalog import GpuCalibration, GpuSpec
from app.queue import CPU_QUEUE

MIN_RUNS = 3
TENSOR_RATIO_BOUNDS = (0.75, 1.5)
UTILISATION_BOUNDS = (0.02, 0.95)
HISTORY_LIMIT = 500  # the newest finished jobs read per page view
COMPARABLE_PEAKS = frozenset({"cuda_max_allocated", "tensor_peak"})


@dataclass(frozen=True)
class MeasuredRun:
    """One finished job: its plan's figures beside its run's, on the device it ran on."""

    job_id: str
    name: str
    method: str
    device: str  # the accelerator's name as the worker read it, or the queue where it was not recorded
    gpu: str | None  # the catalog GPU that device is, when one matches
    finished_at: datetime | None
    predicted_tensor_peak: int
    measured_peak: int | None
    peak_kind: str  # cuda_max_allocated | tensor_peak | process_rss
    predicted_tokens_per_second: float | None
    measured_tokens_per_second: float | None
    flops_per_token: float
    measured_utilisation: float | None

    @property
    def peak_comparable(self) -> bool:
        return self.peak_kind in COMPARABLE_PEAKS and bool(self.measured_peak) and self.predicted_tensor_peak > 0

    @property
    def peak_ratio(self) -> float | None:
        """Measured / predicted peak (for RSS too, shown as such; only tensor peaks calibrate)."""
        if not self.measured_peak or self.predicted_tensor_peak <= 0:
            return None
        return self.measured_peak / self.predicted_tensor_peak

    @property
    def throughput_ratio(self) -> float | None:
        if not self.measured_tokens_per_second or not self.predicted_tokens_per_second:
            return None
        return self.measured_tokens_per_second / self.predicted_tokens_per_second


MEMORY_WORD = re.compile(r"^[0-9]+gb$")


def _tokens(name: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", name.lower())) - {"nvidia", "geforce", "amd", "instinct", "tesla"}


def match_gpu(device: str, gpus: list[GpuSpec]) -> GpuSpec | None:
    """The catalog GPU a device name (as torch reports it) is: every word of the catalog name is in the
    device's ('NVIDIA A100-SXM4-80GB' is 'A100 80GB', 'NVIDIA GeForce RTX 4090' is 'RTX 4090'); the
    memory word only where the device names one ('Tesla T4' is 'T4 16GB'). Ambiguous: none."""
    words = _tokens(device)
    names_memory = any(MEMORY_WORD.match(w) for w in words)

    def required(gpu: GpuSpec) -> set[str]:
        return {w for w in _tokens(gpu.name) if names_memory or not MEMORY_WORD.match(w)}

    candidates = [(len(required(g)), g) for g in gpus if required(g) and required(g) <= words]
    if not candidates:
        return None
    best = max(n for n, _ in candidates)
    top = [g for n, g in candidates if n == best]
    return top[0] if len(top) == 1 else None


def run_device(job: Job) -> str:
    """Where the run measured: the accelerator the worker recorded, else 'CPU' or the GPU queue's class."""
    recorded = (job.summary or {}).get("accelerator")
    if isinstance(recorded, str) and recorded:
        return recorded
    return "CPU" if job.queue == CPU_QUEUE else f"{job.queue} (GPU not recorded)"


def _on_cpu(job: Job, device: str) -> bool:
    """A CPU queue, or a trainer that recorded the CPU (a worker told to advertise a GPU it lacks)."""
    return job.queue == CPU_QUEUE or device == "CPU"


def _peak(job: Job, on_cpu: bool) -> tuple[int | None, str]:
    summary = job.summary or {}
    if summary.get("tensor_peak_bytes") is not None:  # a profiler's tensor peak, where a worker records one
        return int(summary["tensor_peak_bytes"]), "tensor_peak"
    peak = job.peak_memory_bytes if job.peak_memory_bytes is not None else summary.get("peak_memory_bytes")
    return (int(peak) if peak is not None else None), "process_rss" if on_cpu else "cuda_max_allocated"


def measured_run(job: Job, gpus: list[GpuSpec]) -> MeasuredRun | None:
    """The comparison for one job, or None when it has no usable plan or measured nothing."""
    plan, summary = job.plan or {}, job.summary or {}
    if "tensor_peak_bytes" not in plan or not plan.get("tokens_per_step") or not summary:
        return None
    device = run_device(job)
    on_cpu = _on_cpu(job, device)
    gpu = None if on_cpu else match_gpu(device, gpus)
    measured_peak, kind = _peak(job, on_cpu)
    flops_per_token = plan["flops_per_step"] / plan["tokens_per_step"]
    tps = summary.get("tokens_per_second")
    predicted_tps = next((g.get("tokens_per_second") for g in plan.get("gpus", []) if gpu and g["name"] == gpu.name),
                         None)
    utilisation = flops_per_token * tps / (gpu.bf16_tflops * 1e12) if gpu and tps else None
    return MeasuredRun(job_id=job.id, name=job.name, method=job.method, device=device,
                       gpu=gpu.name if gpu else None, finished_at=job.finished_at,
                       predicted_tensor_peak=int(plan["tensor_peak_bytes"]), measured_peak=measured_peak,
                       peak_kind=kind, predicted_tokens_per_second=predicted_tps,
                       measured_tokens_per_second=float(tps) if tps else None, flops_per_token=flops_per_token,
                       measured_utilisation=utilisation)


def measured_runs(session: Session, gpus: list[GpuSpec], limit: int = HISTORY_LIMIT) -> list[MeasuredRun]:
    """The newest succeeded jobs that carry a plan and a measurement, newest first."""
    jobs = session.exec(select(Job).where(Job.status == JobStatus.SUCCEEDED)
                        .order_by(col(Job.finished_at).desc()).limit(limit))
    return [run for run in (measured_run(job, gpus) for job in jobs) if run is not None]


def history(runs: list[MeasuredRun]) -> list[dict[str, Any]]:
    """One row per (device, method): how many runs, and the median measured/predicted ratios."""
    groups: dict[tuple[str, str], list[MeasuredRun]] = {}
    for run in runs:
        groups.setdefault((run.device, run.method), []).append(run)
    rows = []
    for (device, method), group in sorted(groups.items()):
        peaks = [r.peak_ratio for r in group if r.peak_ratio is not None]
        speeds = [r.throughput_ratio for r in group if r.throughput_ratio is not None]
        rows.append({"device": device, "gpu": group[0].gpu, "method": method, "runs": len(group),
                     "peak_kind": group[0].peak_kind, "peak_ratio": statistics.median(peaks) if peaks else None,
                     "throughput_ratio": statistics.median(speeds) if speeds else None, "items": group})
    return rows


def _clamp(value: float, bounds: tuple[float, float]) -> float:
    return min(max(value, bounds[0]), bounds[1])


def propose(gpu: GpuSpec, runs: list[MeasuredRun], by: str = "") -> GpuCalibration | None:
    """What this GPU's runs support under the bounded rule (None: too few runs for any figure)."""
    mine = [r for r in runs if r.gpu == gpu.name]
    peaks = [r.peak_ratio for r in mine if r.peak_comparable and r.peak_ratio is not None]
    ratio = round(_clamp(statistics.median(peaks), TENSOR_RATIO_BOUNDS), 4) if len(peaks) >= MIN_RUNS else None
    utilisation: dict[str, float] = {}
    counts: dict[str, int] = {}
    for method in sorted({r.method for r in mine}):
        values = [r.measured_utilisation for r in mine if r.method == method and r.measured_utilisation]
        if len(values) >= MIN_RUNS:
            utilisation[method] = round(_clamp(statistics.median(values), UTILISATION_BOUNDS), 4)
            counts[method] = len(values)
    if ratio is None and not utilisation:
        return None
    return GpuCalibration(tensor_ratio=ratio, memory_runs=len(peaks) if ratio is not None else 0,
                          utilisation=utilisation, utilisation_runs=counts,
                          calibrated_at=utcnow().isoformat(timespec="seconds"), calibrated_by=by)


def usable_runs(gpu: GpuSpec, runs: list[MeasuredRun]) -> int:
    """The runs on this GPU that measured something the rule can use (for the button's label)."""
    return sum(1 for r in runs if r.gpu == gpu.name and (r.peak_comparable or r.measured_utilisation))
