"""The planner's catalogs in the database: seeded from the repository's files, edited by an admin.

Why a snapshot: a plan reads every GPU and one model; loading the two small
tables per request costs a millisecond or two, but parsing architectures
again and again does not need to happen, so parsed architectures are cached
by (id, updated_at). The shared runtime overheads (CUDA context, allocator
slack, fit margin) stay in the repository's file; what one GPU's measured runs
say about them and about its utilisation is that GPU's `calibration` column
(app/planner/calibration.py), set by an admin from the catalog page.
"""
from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from sqlmodel import Session, select

from app.models import CatalogGpu, CatalogModel, utcnow
from app.planner.architecture import Architecture
from app.planner.catalog import (
    CatalogLookups,
    GpuCalibration,
    GpuSpec,
    ModelEntry,
    Runtime,
    load_catalog,
)


@lru_cache(maxsize=256)
def _parsed_architecture(config_json: str) -> Architecture:
    """Parsing is cached by the config's text, so an edited architecture is parsed anew."""
    return Architecture.from_config(json.loads(config_json))


class DbCatalog(CatalogLookups):
    """The `Catalog` the planner reads, from the catalog_gpu and catalog_model tables."""

    def __init__(self, session: Session) -> None:
        files = load_catalog()
        self.runtime: Runtime = files.runtime
        self.models_as_of = files.models_as_of
        self.gpus_as_of = files.gpus_as_of
        self._model_rows = {row.id: row for row in session.exec(select(CatalogModel).order_by(CatalogModel.id))}
        self._models = {row.id: ModelEntry(id=row.id, name=row.name, source=row.source, config=row.config)
                        for row in self._model_rows.values()}
        gpu_rows = session.exec(select(CatalogGpu).order_by(CatalogGpu.memory_bytes, CatalogGpu.bf16_tflops))
        self._gpus = [_gpu_spec(row) for row in gpu_rows]
        self._gpu_index = {g.id: g for g in self._gpus}

    def architecture(self, model_id: str) -> Architecture:
        """The parsed architecture of a catalog model (KeyError if unknown)."""
        return _parsed_architecture(json.dumps(self._model_rows[model_id].config, sort_keys=True))


def _gpu_spec(row: CatalogGpu) -> GpuSpec:
    return GpuSpec(name=row.name, memory_bytes=row.memory_bytes, bf16_tflops=row.bf16_tflops,
                   price_per_hour=row.price_per_hour, utilisation=dict(row.utilisation),
                   sources={str(k): str(v) for k, v in row.sources.items()},
                   calibration=GpuCalibration.model_validate(row.calibration) if row.calibration else None)


def seed_catalogs(session: Session) -> int:
    """Copy the repository's catalog entries the database does not have yet; returns the rows added.

    Rows already there are left alone (an admin's edits win over the files); entries added to the
    files in a later release reach an existing install on its next start.
    """
    files = load_catalog()
    added = 0
    gpu_ids = set(session.exec(select(CatalogGpu.id)))
    gpu_names = set(session.exec(select(CatalogGpu.name)))
    for gpu in files.gpus():
        if gpu.id not in gpu_ids and gpu.name not in gpu_names:
            session.add(CatalogGpu(id=gpu.id, name=gpu.name, memory_bytes=gpu.memory_bytes,
                                   bf16_tflops=gpu.bf16_tflops, price_per_hour=gpu.price_per_hour,
                                   utilisation=dict(gpu.utilisation), sources=dict(gpu.sources)))
            added += 1
    model_ids = set(session.exec(select(CatalogModel.id)))
    for model in files.models():
        if model.id not in model_ids:
            session.add(CatalogModel(id=model.id, name=model.name, source=model.source, config=dict(model.config)))
            added += 1
    session.commit()
    return added


def save_calibration(session: Session, gpu_id: str, calibration: GpuCalibration | None) -> CatalogGpu:
    """Store (or, with None, clear) a GPU's calibration; KeyError if there is no such GPU."""
    row = session.get(CatalogGpu, gpu_id)
    if row is None:
        raise KeyError(gpu_id)
    row.calibration = calibration.model_dump() if calibration is not None else {}
    row.updated_at = utcnow()
    session.add(row)
    session.commit()
    session.refresh(row)
    return row


def save_gpu(session: Session, spec: GpuSpec) -> CatalogGpu:
    """Add a GPU or replace the one with the same name (its id is the slug of the name)."""
    row = session.get(CatalogGpu, spec.id) or CatalogGpu(id=spec.id, name=spec.name, memory_bytes=1,
                                                           bf16_tflops=1.0, price_per_hour=0.0)
    row.name, row.memory_bytes, row.bf16_tflops = spec.name, spec.memory_bytes, spec.bf16_tflops
    row.price_per_hour, row.utilisation, row.sources = spec.price_per_hour, dict(spec.utilisation), dict(spec.sources)
    row.updated_at = utcnow()
    session.add(row)
    session.commit()
    session.refresh(row)
    return row


def save_model(session: Session, entry: ModelEntry) -> CatalogModel:
    """Add an architecture or replace the one with the same id; the config must parse first."""
    Architecture.from_config(entry.config)  # raises ArchitectureError naming the field
    row = session.get(CatalogModel, entry.id) or CatalogModel(id=entry.id, name=entry.name, config={})
    row.name, row.source, row.config, row.updated_at = entry.name, entry.source, dict(entry.config), utcnow()
    session.add(row)
    session.commit()
    session.refresh(row)
    return row


def gpu_row_public(row: CatalogGpu) -> dict[str, Any]:
    return {"id": row.id, **_gpu_spec(row).model_dump(), "updated_at": row.updated_at.isoformat()}
