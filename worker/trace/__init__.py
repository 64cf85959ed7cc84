"""The traced estimator: one real training step on fake tensors (imports torch; the planning queue only).

  step.py     the step itself: forward, the worker's loss, backward, optimizer.step() under FakeTensorMode
  model.py    the model a job would train, built on `meta` with its method applied, then made fake
  memory.py   live tensor bytes by category and phase, and FLOPs, counted in a dispatch mode

worker/plan_task.py runs it for the `planning` queue; the instant estimator
(app/planner/, no torch) is checked against it.
"""
from __future__ import annotations

from worker.trace.step import TraceResult, trace_step

__all__ = ["TraceResult", "trace_step"]
