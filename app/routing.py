"""Routing by accelerator memory: which queues a worker serves, which queue a job goes to.

DESIGN.md: a worker advertises its accelerator and consumes the queues of
every memory class it can hold (a 80 GB GPU serves gpu-16 … gpu-80); a job
goes to the smallest class its planned peak fits, so a small job can run on
any GPU while a big one waits for a big GPU. This is Celery's own routing:
the job's queue is chosen once, at submission, and stored in the job row
(the reconciler re-sends to the same queue).

A CPU worker serves `cpu`. Where no live worker advertises a GPU (this
machine, a laptop), every job goes to `cpu`: a GPU class no worker serves
would leave the job waiting for hardware that is not there.

No torch here: the API imports this.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from app.queue import CPU_QUEUE, MEMORY_CLASSES  # the queue names and the classes' GiB live in app.queue

log = logging.getLogger(__name__)

GIB = 1024**3
# Cards sold as "N GB" report a little less (H100 80 GB: 79.6 GiB; L4 and
# A10G 24 GB: 22.5 GiB; L40S 48 GB: 45 GiB; H200 141 GB: 140.4 GiB), so a card
# serves a memory class it holds 93% of.
DEVICE_SHARE = 0.93
# A job's planned peak must leave this share of the class free (allocator
# fragmentation and what the estimate does not see).
SAFETY_MARGIN = 0.10


@dataclass(frozen=True)
class NoClassFits(ValueError):
    """The planned peak is above every GPU class: the job needs sharding or another method."""

    peak_bytes: int

    def __str__(self) -> str:
        largest = max(MEMORY_CLASSES.values())
        return (f"the planned peak of {self.peak_bytes / GIB:.1f} GiB does not fit the largest GPU class "
                f"({largest} GiB with a {SAFETY_MARGIN:.0%} margin); use LoRA or QLoRA, gradient checkpointing, "
                f"a smaller micro-batch or a shorter seq_len")


def queues_for_accelerator(kind: str, memory_bytes: int) -> list[str]:
    """The memory-class queues a worker with this accelerator consumes."""
    if kind != "cuda":
        return [CPU_QUEUE]
    served = [name for name, gib in MEMORY_CLASSES.items() if memory_bytes >= gib * DEVICE_SHARE * GIB]
    # A GPU smaller than every class still serves the smallest jobs: nothing else would take them.
    return served or [next(iter(MEMORY_CLASSES))]


def smallest_class_for(peak_bytes: int) -> str:
    """The smallest GPU class that holds `peak_bytes` with the safety margin."""
    for name, gib in MEMORY_CLASSES.items():
        if peak_bytes <= gib * GIB * (1 - SAFETY_MARGIN):
            return name
    raise NoClassFits(peak_bytes)


def job_queue(planned_peak_bytes: int | None, served_queues: Iterable[str]) -> str:
    """Where a job goes: `cpu` unless a live worker serves GPU classes; then the smallest class that fits.

    A job without a plan (the estimate could not be made) goes to the smallest
    class served, where a worker will at least try it.
    """
    gpu_served = [name for name in MEMORY_CLASSES if name in set(served_queues)]
    if not gpu_served:
        return CPU_QUEUE
    if planned_peak_bytes is None:
        return gpu_served[0]
    return smallest_class_for(planned_peak_bytes)


def served_queues(heartbeats: Iterable[str | bytes]) -> set[str]:
    """The queues named by live workers' heartbeat payloads (JSON, as worker.heartbeat writes them)."""
    queues: set[str] = set()
    for raw in heartbeats:
        try:
            payload = json.loads(raw)
        except (TypeError, ValueError):
            continue
        if isinstance(payload, Mapping):
            queues.update(str(q) for q in payload.get("queues") or [])
    return queues


def live_served_queues(redis_url: str) -> set[str]:
    """Queues live workers serve, read from their heartbeats; empty when Redis cannot be read."""
    from redis import Redis

    from app.workers import WORKER_KEY_PATTERN

    try:
        client = Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)
        keys = list(client.scan_iter(match=WORKER_KEY_PATTERN, count=100))
        values = client.mget(keys) if keys else []
    except Exception as exc:  # noqa: BLE001 - routing falls back to cpu; the job is stored either way
        log.warning("cannot read worker heartbeats (%s): routing to %s", exc, CPU_QUEUE)
        return set()
    return served_queues(v for v in values if v is not None)
