"""The catalog page's forms -> catalog entries, validated so a 422 names the field to fix.

Why GiB and one utilisation: people read a GPU's memory as "24 GB" and rarely
know a per-method utilisation; a new GPU gets one fraction for every method
(edit the row later, or seed it in app/planner/data/gpus.json, to differ).
"""
from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.planner.catalog import GpuSpec, ModelEntry
from app.methods import METHODS


class GpuForm(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    name: str = Field(min_length=1, max_length=100, pattern=r"[A-Za-z0-9]")
    memory_gib: float | None = Field(None, gt=0, le=4096)
    bf16_tflops: float | None = Field(None, gt=0, le=100_000)
    price_per_hour: float = Field(ge=0, le=10_000)
    utilisation: float | None = Field(None, gt=0, le=1)

    @field_validator("memory_gib", "bf16_tflops", "utilisation", mode="before")
    @classmethod
    def _blank_is_none(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value


class ModelForm(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    id: str = Field(min_length=1, max_length=100, pattern=r"^[a-z0-9][a-z0-9._-]*$")
    name: str = Field(min_length=1, max_length=255)
    source: str = Field("", max_length=1000)
    config: dict[str, Any]

    @field_validator("config", mode="before")
    @classmethod
    def _parse(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return json.loads(value)
            except json.JSONDecodeError as exc:
                raise ValueError(f"config.json is not valid JSON: {exc}") from exc
        return value


def gpu_from_form(form: dict[str, str], existing: GpuSpec | None) -> GpuSpec:
    """A new GPU needs every number; an existing one keeps what the form leaves blank."""
    data = GpuForm.model_validate(form)
    memory = int(data.memory_gib * 2**30) if data.memory_gib is not None else (existing.memory_bytes if existing else None)
    tflops = data.bf16_tflops if data.bf16_tflops is not None else (existing.bf16_tflops if existing else None)
    if data.utilisation is not None:
        utilisation = {m: data.utilisation for m in METHODS}
    else:
        utilisation = dict(existing.utilisation) if existing else {}
    sources = dict(existing.sources) if existing else {}
    sources["price"] = "edited on the catalog page"
    return GpuSpec.model_validate({"name": existing.name if existing else data.name, "memory_bytes": memory,
                                   "bf16_tflops": tflops, "price_per_hour": data.price_per_hour,
                                   "utilisation": utilisation, "sources": sources})


def model_from_form(form: dict[str, str]) -> ModelEntry:
    data = ModelForm.model_validate(form)
    return ModelEntry(id=data.id, name=data.name, source=data.source or "added on the catalog page", config=data.config)
