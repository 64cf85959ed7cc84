"""Entry point: `python -m worker.train SPEC_PATH`; exit 0 on success, 1 on failure,
3 (`stop.STOPPED_EXIT`) when SIGTERM stopped it at a step boundary after a checkpoint.

Failures become an `error` event with a short message fit for the job's
`error` field, plus the full traceback as a `log` event for whoever debugs
it. Heavy imports happen inside the guard so that even a broken install
(a missing optional backend) is reported through the protocol.
"""
from __future__ import annotations

import os

# Must be decided before torch loads OpenMP: a brief spin when this trainer has the
# machine to itself, passive waiting when it shares it (worker/train/threads.py).
from worker.train.threads import choose_wait_policy, other_trainers  # noqa: E402

WAIT_POLICY = choose_wait_policy(os.environ, other_trainers())

import logging  # noqa: E402 - after the OpenMP setting on purpose
import sys  # noqa: E402
import traceback  # noqa: E402
from pathlib import Path  # noqa: E402

from worker.train import events  # noqa: E402

# bitsandbytes (imported by peft) logs at import that its optional CPU 4-bit
# kernels package is missing; it changes nothing for the job, so keep it out of the job log.
logging.getLogger("bitsandbytes").setLevel(logging.ERROR)

MAX_MESSAGE = 500


def short_message(exc: BaseException) -> str:
    """The exception's first line, trimmed; a CUDA OOM keeps only its first sentence."""
    text = str(exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    if type(exc).__name__ == "OutOfMemoryError":
        first = first.split(". ")[0]
    return first[:MAX_MESSAGE]


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        events.error("usage: python -m worker.train SPEC_PATH", "UsageError")
        return 2
    from worker.train.stop import STOPPED_EXIT, Stopped

    try:
        from worker.train.loop import train
        from worker.train.spec import load_spec

        events.log(f"CPU threads wait: {WAIT_POLICY}")

        train(load_spec(Path(argv[0])))
    except Stopped:
        return STOPPED_EXIT  # not a failure: the loop has saved its state and said so
    except Exception as exc:  # noqa: BLE001 - every failure must reach the parent as an event
        events.log(traceback.format_exc())
        events.error(short_message(exc), type(exc).__name__)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
