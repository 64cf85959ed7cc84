"""The planner's catalogs: model architectures and GPUs, read from data files in the repository.

Why behind an interface: DESIGN.md wants catalogs in the database, seeded
from these files and edited by an admin. Everything in the planner asks a
`Catalog` (models, GPUs, the runtime overheads), never the files, so a
database-backed catalog with the same methods replaces `FileCatalog` without
touching the estimator; `seed_rows()` gives the rows to seed it with.
"""
from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.planner.architecture import Architecture

DATA_DIR = Path(__file__).resolve().parent / "data"


def slug(name: str) -> str:
    """'A100 80GB' -> 'a100-80gb': GPUs are found by name or by this id."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


class ModelEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    name: str
    source: str
    config: dict[str, Any]


class GpuCalibration(BaseModel):
    """What a GPU's measured runs said, as an admin applied it (app/planner/calibration.py computes it).

    `tensor_ratio` is the median of measured peak / predicted tensor peak over the runs that measured
    tensors (torch.cuda.max_memory_allocated; never a CPU's RSS); the planner scales the tensor peak
    by it before adding the CUDA context and the allocator slack. `utilisation` replaces the seeded
    fraction per method it was measured for. Both are clamped and need a minimum number of runs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tensor_ratio: float | None = Field(None, gt=0)
    memory_runs: int = Field(0, ge=0)
    utilisation: dict[str, float] = {}
    utilisation_runs: dict[str, int] = {}
    calibrated_at: str = ""
    calibrated_by: str = ""

    def note(self, gpu: str, method: str) -> str | None:
        """The line a plan carries when one of its figures on this GPU is calibrated (None if none is)."""
        parts = []
        if self.tensor_ratio is not None:
            parts.append(f"peak memory x{self.tensor_ratio:.3f} from {self.memory_runs} measured runs")
        if method in self.utilisation:
            parts.append(f"utilisation {100 * self.utilisation[method]:.1f}% from "
                         f"{self.utilisation_runs.get(method, 0)} measured {method} runs")
        return f"{gpu}: calibrated, {'; '.join(parts)}" if parts else None


class GpuSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    memory_bytes: int = Field(gt=0)
    bf16_tflops: float = Field(gt=0, description="Dense bf16 tensor peak, FP32 accumulate")
    price_per_hour: float = Field(ge=0, description="USD per GPU-hour, one provider's on-demand rate")
    utilisation: dict[str, float] = Field(description="Fraction of the peak a step reaches, per method")
    sources: dict[str, str] = {}
    calibration: GpuCalibration | None = None

    @field_validator("utilisation")
    @classmethod
    def _fractions(cls, value: dict[str, float]) -> dict[str, float]:
        bad = {k: v for k, v in value.items() if not 0 < v <= 1}
        if bad:
            raise ValueError(f"utilisation must be in (0, 1]: {bad}")
        return value

    @property
    def id(self) -> str:
        return slug(self.name)

    def utilisation_for(self, method: str) -> float:
        """The calibrated fraction where this GPU's runs measured the method, else the seeded one."""
        if self.calibration is not None and method in self.calibration.utilisation:
            return self.calibration.utilisation[method]
        return self.utilisation.get(method, 0.3)


class Runtime(BaseModel):
    """What the tensors do not hold: CUDA context and workspaces, allocator slack; the fit margin."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cuda_context_bytes: int = Field(ge=0)
    allocator_slack: float = Field(ge=0, lt=1)
    fit_margin: float = Field(ge=0, lt=1)
    sources: dict[str, str] = {}


class Catalog(Protocol):
    """What the planner reads; a database-backed catalog implements the same."""

    runtime: Runtime

    def models(self) -> list[ModelEntry]: ...

    def gpus(self) -> list[GpuSpec]: ...

    def model(self, model_id: str) -> ModelEntry | None: ...

    def gpu(self, name: str) -> GpuSpec | None: ...


class CatalogLookups:
    """The lookups both catalogs answer alike, over `_models`, `_gpus` and `_gpu_index` (by slug)."""

    _models: dict[str, ModelEntry]
    _gpus: list[GpuSpec]
    _gpu_index: dict[str, GpuSpec]

    def models(self) -> list[ModelEntry]:
        return list(self._models.values())

    def gpus(self) -> list[GpuSpec]:
        return list(self._gpus)

    def model(self, model_id: str) -> ModelEntry | None:
        return self._models.get(model_id)

    def gpu(self, name: str) -> GpuSpec | None:
        return self._gpu_index.get(slug(name))


class FileCatalog(CatalogLookups):
    """Catalogs from `app/planner/data/*.json`, validated on load."""

    def __init__(self, data_dir: Path = DATA_DIR) -> None:
        models = json.loads((data_dir / "models.json").read_text(encoding="utf-8"))
        gpus = json.loads((data_dir / "gpus.json").read_text(encoding="utf-8"))
        self.models_as_of: str = models.get("as_of", "")
        self.gpus_as_of: str = gpus.get("as_of", "")
        self._models = {m.id: m for m in (ModelEntry.model_validate(row) for row in models["models"])}
        self._gpus = [GpuSpec.model_validate(row) for row in gpus["gpus"]]
        self._gpu_index = {slug(g.name): g for g in self._gpus}
        self.runtime = Runtime.model_validate(gpus["runtime"])
        self._architectures: dict[str, Architecture] = {}

    def architecture(self, model_id: str) -> Architecture:
        """The parsed architecture of a catalog model (KeyError if unknown)."""
        if model_id not in self._architectures:
            self._architectures[model_id] = Architecture.from_config(self._models[model_id].config)
        return self._architectures[model_id]

    def seed_rows(self) -> dict[str, list[dict[str, Any]]]:
        """Rows for a database table that will replace the files."""
        return {"models": [m.model_dump() for m in self.models()], "gpus": [g.model_dump() for g in self.gpus()]}


@lru_cache(maxsize=1)
def load_catalog() -> FileCatalog:
    return FileCatalog()
