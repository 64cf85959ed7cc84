"""Routing by accelerator memory (DESIGN.md "Routing"): worker queues and job queues."""
from __future__ import annotations

import json

import pytest

from app.routing import (
    GIB,
    NoClassFits,
    job_queue,
    queues_for_accelerator,
    served_queues,
    smallest_class_for,
)

pytestmark = pytest.mark.unit


def test_a_cpu_worker_serves_cpu_only() -> None:
    assert queues_for_accelerator("cpu", 24 * GIB) == ["cpu"]


@pytest.mark.parametrize(
    ("memory_gib", "queues"),
    [
        (23.99, ["gpu-16", "gpu-24"]),  # RTX 4090 / 3090 as the driver reports them
        (79.6, ["gpu-16", "gpu-24", "gpu-48", "gpu-80"]),  # H100 80 GB
        (22.5, ["gpu-16", "gpu-24"]),  # L4 / A10G: 24 GB sold, 22.5 GiB reported
        (45.0, ["gpu-16", "gpu-24", "gpu-48"]),  # L40S: 48 GB sold, 45 GiB reported
        (40.0, ["gpu-16", "gpu-24"]),  # A100 40 GB: no 40 class, so the 24 below it
        (140.4, ["gpu-16", "gpu-24", "gpu-48", "gpu-80", "gpu-141"]),  # H200
        (11.7, ["gpu-16"]),  # smaller than every class: still takes the smallest jobs
    ],
)
def test_a_gpu_worker_serves_every_class_its_memory_holds(memory_gib: float, queues: list[str]) -> None:
    assert queues_for_accelerator("cuda", int(memory_gib * GIB)) == queues


@pytest.mark.parametrize(
    ("peak_gib", "queue"),
    [(0.2, "gpu-16"), (14.3, "gpu-16"), (14.5, "gpu-24"), (42.5, "gpu-48"), (60, "gpu-80"), (126, "gpu-141")],
)
def test_a_job_goes_to_the_smallest_class_its_peak_fits_with_a_margin(peak_gib: float, queue: str) -> None:
    assert smallest_class_for(int(peak_gib * GIB)) == queue


def test_a_peak_above_every_class_is_refused_with_what_to_change() -> None:
    with pytest.raises(NoClassFits) as caught:
        smallest_class_for(132 * GIB * 2)
    assert "264.0 GiB" in str(caught.value) and "LoRA" in str(caught.value)


def test_without_gpu_workers_every_job_goes_to_cpu() -> None:
    assert job_queue(500 * GIB, {"cpu", "planning"}) == "cpu"
    assert job_queue(None, set()) == "cpu"


def test_with_gpu_workers_a_job_without_a_plan_goes_to_the_smallest_served_class() -> None:
    assert job_queue(None, {"cpu", "gpu-24", "gpu-48"}) == "gpu-24"


def test_served_queues_come_from_heartbeats_and_skip_garbage() -> None:
    beats = [json.dumps({"queues": ["gpu-16", "gpu-24"]}), b'{"queues": ["cpu"]}', "not json", json.dumps([1])]
    assert served_queues(beats) == {"gpu-16", "gpu-24", "cpu"}
