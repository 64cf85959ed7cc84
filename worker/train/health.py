"""Training health: a run whose loss stops being a number, or whose gradients explode, ends at once.

Why end it rather than let it run: a NaN loss never comes back, and every later step spends GPU time
on noise; a gradient norm 1000× its running median means the updates are no longer small steps
(clipping caps the step, not the cause). The job then fails with what to change, unless the user
chose to go on (`hyperparameters.continue_on_divergence`), in which case the event is logged instead.
"""
from __future__ import annotations

import math
import statistics
from collections import deque
from typing import Any

from worker.train import events

EXPLOSION = 1000.0  # times the running median
UNIFORM_TIMES = 10.0  # a loss this many times a uniform guess's (ln V) is no longer learning anything
WINDOW = 50  # recent steps the median is taken over
WARMUP_STEPS = 5  # steps before a median is trusted


class Diverged(RuntimeError):
    """The run's loss or gradients went out of range; the message says what to change."""


class Health:
    """`vocab_size`: for a supervised loss, which starts near ln V (a uniform guess over the vocabulary)
    and only falls; ten times that is a run that blew up (learning rate 5: from 6 to 4,000 in one step on
    the demo model) even while every number stays finite. None: no such bound (DPO's pair loss)."""

    def __init__(self, hp: Any, vocab_size: int | None = None) -> None:
        self.hp = hp
        self.norms: deque[float] = deque(maxlen=WINDOW)
        self.loss_bound = UNIFORM_TIMES * math.log(vocab_size) if vocab_size and vocab_size > 1 else math.inf

    def check(self, step: int, loss: float, grad_norm: float, learning_rate: float) -> None:
        problem = None
        if not math.isfinite(loss):
            problem = f"the training loss is {loss} at step {step}"
        elif not math.isfinite(grad_norm):
            problem = f"the gradient norm is {grad_norm} at step {step}"
        elif loss > self.loss_bound:
            problem = (f"the training loss {loss:.4g} at step {step} is over {UNIFORM_TIMES:.0f}× that of a uniform "
                       f"guess over the vocabulary ({self.loss_bound / UNIFORM_TIMES:.2f})")
        elif len(self.norms) >= WARMUP_STEPS and grad_norm > EXPLOSION * (median := statistics.median(self.norms)):
            problem = (f"the gradient norm {grad_norm:.3g} at step {step} is over {EXPLOSION:.0f}× its running "
                       f"median {median:.3g}")
        if math.isfinite(grad_norm):
            self.norms.append(grad_norm)
        if problem is None:
            return
        advice = (f"training diverged: {problem}. Lower the learning rate (it was {learning_rate:.3g}"
                  f"{'' if self.hp.warmup_steps else ', with no warm-up'}) or add warmup_steps")
        if self.hp.continue_on_divergence:
            events.log(advice + "; going on, as continue_on_divergence asks", diverged={"step": step})
            return
        raise Diverged(advice)
