"""What this worker trains on: a CUDA device when there is one, else the CPU.

`TUNEDECK_ACCELERATOR_NAME` / `TUNEDECK_ACCELERATOR_MEMORY_GB` override the
reading, so routing can be tested on a machine without a GPU.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass

import psutil


@dataclass(frozen=True)
class Accelerator:
    name: str
    kind: str  # "cuda" | "cpu"
    memory_bytes: int

    def public(self) -> dict[str, object]:
        return asdict(self)


def detect() -> Accelerator:
    name = os.environ.get("TUNEDECK_ACCELERATOR_NAME")
    memory_gb = os.environ.get("TUNEDECK_ACCELERATOR_MEMORY_GB")
    if name and memory_gb:
        return Accelerator(name, "cuda", int(float(memory_gb) * 1024**3))
    try:
        import torch

        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            return Accelerator(props.name, "cuda", int(props.total_memory))
    except ImportError:
        pass
    return Accelerator("CPU", "cpu", int(psutil.virtual_memory().total))
