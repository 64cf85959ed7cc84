"""Cooperative stop: SIGTERM asks the trainer to finish its step, checkpoint and exit.

The supervisor sends SIGTERM on cancel and SIGKILL after the grace period,
so the handler only sets a flag: the loop looks at it between steps, where
the model, the optimiser and the data position agree and a checkpoint is
exact. The trainer then exits with STOPPED_EXIT, which tells the worker "stopped on
request, resumable", not "crashed".
"""
from __future__ import annotations

import signal
import threading
from types import FrameType

STOPPED_EXIT = 3


class Stopped(Exception):
    """Raised by the loop once it has saved its state after a stop request."""

    def __init__(self, step: int) -> None:
        super().__init__(f"stopped on request at step {step}")
        self.step = step


class StopRequest:
    """A flag set by SIGTERM (and SIGINT, for someone at a terminal)."""

    def __init__(self) -> None:
        self._event = threading.Event()

    @classmethod
    def install(cls) -> StopRequest:
        request = cls()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, request._handle)
        return request

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self._event.set()

    @property
    def requested(self) -> bool:
        return self._event.is_set()
