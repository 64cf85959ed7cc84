"""The traced planner on the `planning` queue: trace each requested method, store the answer in Redis.

Why in the worker: tracing imports torch, transformers and peft and takes
seconds; the web process must stay light and responsive. The API sends the
request (dataset already counted) with a key derived from its hash, then
polls that key; the answer stays cached under it for a day, so asking the
same question again is instant.

Registered in worker/tasks.py as `tunedeck.plan_trace`, routed to the
`planning` queue, which every worker consumes by default (a CPU worker can
serve it; TUNEDECK_WORKER_QUEUES=cpu,planning).
"""
from __future__ import annotations

import json
import logging
from typing import Any, Protocol

from app.planner.catalog import Catalog
from app.planner.estimate import RunLength, assemble, badges, method_notes
from app.planner.memory import MemoryEstimate
from app.planner.service import PlanError, build_setup, resolve_architecture, resolve_gpus
from app.schemas.plan import PlanRequest

log = logging.getLogger(__name__)
RESULT_TTL_SECONDS = 24 * 3600


class KeyValue(Protocol):
    def set(self, key: str, value: str, ex: int | None = None) -> Any: ...


def database_catalog() -> Catalog:
    """The catalog an admin edits, so a GPU or architecture added on the page can be traced too."""
    from sqlmodel import Session

    from app.db import get_engine
    from app.planner.db_catalog import DbCatalog

    with Session(get_engine()) as session:
        return DbCatalog(session)


def traced_plan(request: dict[str, Any], catalog: Catalog | None = None) -> dict[str, Any]:
    """Trace every requested method; the same answer shape as the instant plan, `mode` = "traced"."""
    from worker.trace import trace_step  # torch, transformers, peft

    body = PlanRequest.model_validate(request)
    catalog = catalog if catalog is not None else database_catalog()
    arch = resolve_architecture(body, catalog)
    gpus = resolve_gpus(body, catalog)
    run = RunLength(dataset_tokens=body.dataset_tokens, epochs=body.epochs)
    estimates = []
    for method in body.methods:
        setup = build_setup(body, method, arch)
        traced = trace_step(arch, setup)
        memory = MemoryEstimate(
            peak=traced.peak_bytes, phase=traced.peak_phase,
            breakdown={k: v for k, v in traced.breakdown.items() if k != "paged"},
            phases=traced.phase_peaks, paged=traced.paged_bytes, trainable_params=traced.trainable_params,
            total_params=traced.total_params, notes=list(traced.notes),
        )
        if traced.paged_bytes:
            memory.notes.append(f"{traced.paged_bytes / 2**30:.2f} GiB of optimiser state in paged (managed) memory, "
                                "not counted")
        steps = run.steps(setup)
        flops = traced.flops_per_micro_batch * setup.gradient_accumulation
        notes = method_notes(arch, setup, memory, steps) + [f"traced in {traced.seconds:.1f} s"]
        estimate = assemble(method, memory, flops, steps, gpus, catalog.runtime, notes)
        estimate["mode"] = "traced"
        estimates.append(estimate)
    return {"model": body.model, "estimates": estimates, "badges": badges(estimates),
            "dataset_tokens": body.dataset_tokens}


def run_plan_trace(key: str, request: dict[str, Any], store: KeyValue | None = None,
                   catalog: Catalog | None = None) -> None:
    """The task body: compute, then store the answer (or the error) under `key` for the API to read."""
    if store is None:
        from redis import Redis

        from app.settings import get_settings

        store = Redis.from_url(get_settings().resolved_redis_url)
    try:
        answer: dict[str, Any] = traced_plan(request, catalog)
    except PlanError as exc:
        answer = {"error": f"{'.'.join(map(str, exc.loc))}: {exc.message}"}
    except Exception as exc:  # noqa: BLE001 - an architecture the tracer cannot build: say so, keep the worker
        log.exception("tracing plan %s failed", key)
        answer = {"error": f"the traced estimator could not run this model: {type(exc).__name__}: {exc}"[:500]}
    store.set(key, json.dumps(answer), ex=RESULT_TTL_SECONDS)
