"""How the trainer's OpenMP threads wait between parallel regions: decided before torch loads OpenMP.

Why it matters on the CPU: busy-waiting threads are fast when a trainer has
the cores to itself and collapse throughput when trainers share them. Measured
on 2 cores (SmolLM2 LoRA, 20 steps; the 40-step demo job for the pairs):

- alone, passive waiting (spin 0): 164-190 real tokens/s; a brief spin
  (GOMP_SPINCOUNT=20000, then sleep): 229-250 tokens/s;
- two demo jobs at once: both passive 16 s, both spinning 46 s, one of each 21 s.

So a trainer that finds no other trainer running spins briefly, and one that
finds another waits passively. An explicit OMP_WAIT_POLICY or GOMP_SPINCOUNT
from the parent always wins (the test suite, which runs many trainers at
once, sets passive waiting).
"""
from __future__ import annotations

import os
from collections.abc import Iterable, MutableMapping
from pathlib import Path

BRIEF_SPIN = "20000"  # libgomp spins this many times before sleeping (its default is 300000)
TRAINER_MODULE = "worker.train"


def other_trainers(proc: Path = Path("/proc"), me: int | None = None) -> int:
    """How many other `python -m worker.train` processes run on this machine (0 where /proc is absent)."""
    me = os.getpid() if me is None else me
    count = 0
    for entry in proc.glob("[0-9]*"):
        if entry.name == str(me):
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if is_trainer(a.decode(errors="replace") for a in args):
            count += 1
    return count


def is_trainer(args: Iterable[str]) -> bool:
    """A command line running this trainer: `python -m worker.train SPEC`."""
    argv = list(args)
    return any(a == "-m" and b == TRAINER_MODULE for a, b in zip(argv, argv[1:]))


def choose_wait_policy(environ: MutableMapping[str, str], others: int) -> str:
    """Set OMP_WAIT_POLICY (and GOMP_SPINCOUNT when alone) unless the parent chose; returns what holds."""
    if "OMP_WAIT_POLICY" in environ or "GOMP_SPINCOUNT" in environ:
        return f"as set: OMP_WAIT_POLICY={environ.get('OMP_WAIT_POLICY', '-')}, " \
               f"GOMP_SPINCOUNT={environ.get('GOMP_SPINCOUNT', '-')}"
    environ["OMP_WAIT_POLICY"] = "PASSIVE"
    if others:
        return f"passive ({others} other trainer(s) share this machine)"
    environ["GOMP_SPINCOUNT"] = BRIEF_SPIN
    return f"a brief spin (GOMP_SPINCOUNT={BRIEF_SPIN}): no other trainer on this machine"
