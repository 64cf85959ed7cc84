"""One method's estimate on the user's real data: the peak at the widest micro-batch, the time from real batches.

Why not new formulas: the estimator (memory.py, compute.py) is exact for a micro-batch of a given
shape, so this feeds it the shapes the trainer really makes (app.planner.lengths): the memory at the
widest micro-batch (grouped or padded: `batch_size` rows × the longest row; padding-free: one row of
the longest rows end to end), and the FLOPs of the average micro-batch. FLOPs per micro-batch are a
quadratic in its width (linear layers and the loss grow with it, attention with its square), so
three evaluations give the exact mean over any list of widths from their mean and mean square.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from app.planner.architecture import Architecture
from app.planner.catalog import GpuSpec, Runtime
from app.planner.compute import flops_per_micro_batch
from app.planner.estimate import RunLength, gpu_rows, instant_estimate
from app.planner.lengths import (Batching, Cut, RowLength, batch_widths, cut, held_out_rows, histogram, peak_batch,
                                 percentile, trainer_steps)
from app.planner.setup import TrainingSetup

DEFAULT_BATCHING: Batching = "grouped"  # the trainer's default without flash-attention (worker/train/prepare.py)


class NoTrainableRows(ValueError):
    """Every row's prompt fills seq_len: the trainer would drop them all."""


@dataclass(frozen=True)
class DataShape:
    """What the trainer makes of a dataset at one seq_len, micro-batch and batching."""

    rows: int
    cut: Cut
    training_rows: int
    held_out: int
    steps: int
    batching: Batching
    peak_rows: int  # rows of the widest micro-batch (1 when padding-free)
    peak_width: int  # its positions per row
    widths: list[int]  # simulated micro-batch widths, for the time
    real_tokens: int  # tokens of the training rows in one epoch, after the cut

    steps_per_epoch: int

    @property
    def padding(self) -> float:
        """The fraction of computed positions that are padding (none when padding-free)."""
        if self.batching == "padding_free" or not self.widths or not self.cut.lengths:
            return 0.0
        mean_row = sum(self.cut.lengths) / len(self.cut.lengths)
        return max(0.0, 1 - mean_row / (sum(self.widths) / len(self.widths)))


def refusal(rows: list[RowLength], seq_len: int) -> str | None:
    """Why no row of the dataset can train at seq_len (None when one can): the trainer's "no trainable rows"."""
    shape = cut(rows, seq_len)
    if shape.lengths or not rows:
        return None
    usable = [max(r.prompt, 1) + 1 for r in rows if r.total > max(r.prompt, 1)]
    fix = f"raise seq_len to at least {min(usable)}" if usable else "no row has an answer to learn"
    return (f"seq_len {seq_len} drops all {len(rows)} rows of this dataset and truncates none that could train: "
            f"every row's prompt is at least {seq_len} tokens, so no answer token is left to learn from; "
            f"the shortest row is {shape.shortest_row} tokens and the shortest prompt {shape.shortest_prompt}; {fix}")


def data_shape(rows: list[RowLength], setup: TrainingSetup, batching: Batching = DEFAULT_BATCHING,
               epochs: float | None = 1.0, max_steps: int | None = None, eval_fraction: float | None = None,
               eval_count: int | None = None) -> DataShape:
    """The trainer's rows, steps and batches for this setup (raises NoTrainableRows, as the trainer would)."""
    shape = cut(rows, setup.seq_len)
    if not shape.lengths:
        raise NoTrainableRows(refusal(rows, setup.seq_len) or "the dataset has no rows")
    held = held_out_rows(len(shape.lengths), eval_fraction, eval_count)
    training = max(0, len(shape.lengths) - held)
    # The held-out rows are torch's seeded pick; the widest batch is taken over all usable rows (a bound).
    peak_rows, peak_width = peak_batch(shape.lengths, setup.batch_size, batching)
    real = round(sum(shape.lengths) * training / len(shape.lengths))
    return DataShape(
        rows=len(rows), cut=shape, training_rows=training, held_out=held,
        steps=trainer_steps(max(training, 1), setup.batch_size, setup.gradient_accumulation, epochs, max_steps),
        batching=batching, peak_rows=peak_rows, peak_width=peak_width,
        widths=batch_widths(shape.lengths, setup.batch_size, batching), real_tokens=real,
        steps_per_epoch=trainer_steps(max(training, 1), setup.batch_size, setup.gradient_accumulation, 1.0))


def mean_micro_batch_flops(arch: Architecture, setup: TrainingSetup, rows_per_batch: int, widths: list[int]) -> float:
    """The mean FLOPs of micro-batches of these widths (exact: FLOPs are quadratic in the width)."""
    if not widths:
        return 0.0
    points = (64, 128, 256)
    f = [flops_per_micro_batch(arch, dataclasses.replace(setup, seq_len=s, batch_size=rows_per_batch))
         for s in points]
    # Lagrange interpolation through the three points, then the mean of a·w² + b·w + c.
    (x0, x1, x2), (y0, y1, y2) = points, f
    a = y0 / ((x0 - x1) * (x0 - x2)) + y1 / ((x1 - x0) * (x1 - x2)) + y2 / ((x2 - x0) * (x2 - x1))
    b = (-y0 * (x1 + x2) / ((x0 - x1) * (x0 - x2)) - y1 * (x0 + x2) / ((x1 - x0) * (x1 - x2))
         - y2 * (x0 + x1) / ((x2 - x0) * (x2 - x1)))
    c = y0 - a * x0 * x0 - b * x0
    mean = sum(widths) / len(widths)
    mean_sq = sum(w * w for w in widths) / len(widths)
    return a * mean_sq + b * mean + c


def real_data_estimate(arch: Architecture, setup: TrainingSetup, data: DataShape, gpus: list[GpuSpec],
                       runtime: Runtime) -> dict[str, Any]:
    """The instant estimate at the trainer's widest micro-batch, timed over its real micro-batches."""
    widest = dataclasses.replace(setup, seq_len=max(1, data.peak_width), batch_size=data.peak_rows)
    estimate = instant_estimate(arch, widest, gpus, runtime, RunLength(trainer_steps=data.steps))
    rows_per_batch = 1 if data.batching == "padding_free" else setup.batch_size
    step_flops = mean_micro_batch_flops(arch, setup, rows_per_batch, data.widths) * setup.gradient_accumulation
    estimate["flops_per_step"] = int(step_flops)
    estimate["gpus"] = gpu_rows(setup.method, estimate["peak_bytes"], step_flops, data.steps, gpus, runtime)
    shape = "one packed row of " if data.batching == "padding_free" else f"{data.peak_rows} rows × "
    estimate["notes"].append(
        f"peak at the widest micro-batch the trainer makes ({data.batching} batches): {shape}{data.peak_width} "
        f"tokens, not {setup.batch_size} × {setup.seq_len}")
    estimate["notes"].append(
        f"time from the real micro-batches: mean width {sum(data.widths) / max(1, len(data.widths)):.0f} tokens, "
        f"{100 * data.padding:.1f} % padding; {data.steps} steps of {data.training_rows} training rows"
        + (f" ({data.held_out} held out)" if data.held_out else ""))
    return estimate


def lengths_summary(rows: list[RowLength], data: DataShape, seq_len: int) -> dict[str, Any]:
    """What the plan answer and the page say about the dataset's lengths."""
    totals = [r.total for r in rows]
    return {
        "rows": data.rows, "training_rows": data.training_rows, "held_out": data.held_out,
        "truncated": data.cut.truncated, "dropped": data.cut.dropped, "seq_len": seq_len,
        "shortest": min(totals), "longest": max(totals), "median": percentile(totals, 0.5),
        "p95": percentile(totals, 0.95), "batching": data.batching, "peak_rows": data.peak_rows,
        "peak_width": data.peak_width, "steps_per_epoch": data.steps_per_epoch, "steps": data.steps,
        "real_tokens": data.real_tokens, "padding": round(data.padding, 4),
        "histogram": histogram(rows, seq_len),
    }


_shapes: dict[tuple[Any, ...], tuple[tuple[RowLength, ...], DataShape, dict[str, Any]]] = {}


def shape_and_summary(rows: tuple[RowLength, ...], setup: TrainingSetup, batching: Batching = DEFAULT_BATCHING,
                      epochs: float | None = 1.0, max_steps: int | None = None, eval_fraction: float | None = None,
                      eval_count: int | None = None) -> tuple[DataShape, dict[str, Any]]:
    """`data_shape` and `lengths_summary`, remembered for the same rows (the cached count's own tuple) and
    training shape: the instant plan re-asked as a form changes stays within its 50 ms."""
    key = (id(rows), setup.seq_len, setup.batch_size, setup.gradient_accumulation, batching, epochs, max_steps,
           eval_fraction, eval_count)
    hit = _shapes.get(key)
    if hit is not None and hit[0] is rows:  # the value holds the rows, so their id is not reused meanwhile
        return hit[1], dict(hit[2])
    data = data_shape(list(rows), setup, batching, epochs, max_steps, eval_fraction, eval_count)
    summary = lengths_summary(list(rows), data, setup.seq_len)
    if len(_shapes) > 256:
        _shapes.clear()
    _shapes[key] = (rows, data, summary)
    return data, dict(summary)


def traced_request(payload: dict[str, Any], lengths: dict[str, Any] | None) -> dict[str, Any]:
    """The request the planning queue traces: on a dataset, its widest micro-batch instead of seq_len."""
    if lengths:  # (the API's own floor of 8 positions for a dataset of tiny rows)
        payload = {**payload, "seq_len": max(8, lengths["peak_width"]), "batch_size": lengths["peak_rows"]}
    return payload


def traced_on_rows(traced: list[dict[str, Any]], instant: list[dict[str, Any]], arch: Architecture,
                   setups: dict[str, TrainingSetup], widths: dict[str, Any], gpus: list[GpuSpec],
                   runtime: Runtime) -> list[dict[str, Any]]:
    """Traced estimates of the widest micro-batch, given the run's real steps and time: the instant
    real-batch FLOPs scaled by the trace's own FLOPs over the instant ones at that same batch."""
    by_method = {e["method"]: e for e in instant}
    for estimate in traced:
        method = estimate["method"]
        setup, mine = setups[method], by_method.get(method)
        if mine is None:
            continue
        widest = dataclasses.replace(setup, seq_len=max(8, widths["peak_width"]), batch_size=widths["peak_rows"])
        at_widest = flops_per_micro_batch(arch, widest) * setup.gradient_accumulation
        step_flops = mine["flops_per_step"] * (estimate["flops_per_step"] / at_widest if at_widest else 1.0)
        estimate.update(flops_per_step=int(step_flops), steps=mine["steps"], dataset_lengths=widths,
                        gpus=gpu_rows(method, estimate["peak_bytes"], step_flops, mine["steps"], gpus, runtime))
        estimate["notes"] = [n for n in estimate["notes"] if not n.endswith("optimizer steps")] + [
            n for n in mine["notes"] if n.startswith(("dataset ", "peak at the widest", "time from the real"))]
    return traced
