"""From a plan request to estimates: resolve the model, validate each method against it, estimate.

Why here and not in the route: the checks that need the architecture (a
LoRA target the model does not have, more trainable layers than it has, a
sequence longer than its positions) are domain rules; they raise
`PlanError` with the request location of the field to fix, which the route
turns into a 422 like FastAPI's own.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from app.planner.architecture import Architecture, ArchitectureError
from app.planner.catalog import Catalog, FileCatalog, GpuSpec, Runtime
from app.planner.caveats import as_the_job_runs
from app.planner.estimate import RunLength, badges, instant_estimate
from app.methods import MethodError, check_against, check_seq_len
from app.planner.setup import TrainingSetup
from app.schemas.plan import PlanRequest

if TYPE_CHECKING:
    from app.planner.db_catalog import DbCatalog

BYTES_PER_BPE_TOKEN = 4.0  # a rough English average for BPE vocabularies; byte-level tokenizers: 1
# A stored dataset's file (counted here with the model's tokenizer), a token count, or None: not found.
TokenSource = Callable[[str, Architecture], "Path | int | None"]


class PlanError(ValueError):
    """A request the planner cannot answer; `loc` is the body path of the field to fix."""

    def __init__(self, loc: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.loc = loc
        self.message = message


def resolve_architecture(request: PlanRequest, catalog: Catalog) -> Architecture:
    if request.config is not None:
        try:
            return Architecture.from_config(request.config)
        except ArchitectureError as exc:
            raise PlanError(("config", exc.field), exc.message) from exc
    assert request.model is not None
    entry = catalog.model(request.model)
    config = entry.config if entry is not None else _model_folder_config(request.model)
    try:
        return Architecture.from_config(config)
    except ArchitectureError as exc:
        raise PlanError(("model",), f"{request.model}'s config.json cannot be used: {exc}") from exc


def _model_folder_config(model_id: str) -> dict[str, Any]:
    """A local model folder, the demo model or a hub id (where a hub is reachable)."""
    from app.catalog.models import ModelNotFound, get_model

    try:
        return get_model(model_id).config
    except (ModelNotFound, ValueError, OSError) as exc:
        raise PlanError(("model",), f"unknown model {model_id!r}: not in the plan catalog "
                                    f"(GET /api/v1/plan/catalog) and {exc}") from exc


def build_setup(request: PlanRequest, method: str, arch: Architecture) -> TrainingSetup:
    """The method's validated options, checked against the architecture as job submission checks them.

    The request's optimiser applies to the methods whose jobs can take it; the others are
    estimated with their own (`app.planner.caveats`), so the row matches what Launch runs."""
    try:
        setup = TrainingSetup.build(
            method, request.method_config.get(method, {}), optimizer=request.optimizer,  # type: ignore[arg-type]
            seq_len=request.seq_len, batch_size=request.batch_size,
            gradient_accumulation=request.gradient_accumulation,
            gradient_checkpointing=request.gradient_checkpointing, precision=request.precision,
            objective=request.objective,
        )
    except ValidationError as exc:
        error = exc.errors()[0]
        raise PlanError(("method_config", method, *error["loc"]), error["msg"]) from exc
    if request.objective == "dpo" and setup.spec.dpo_reference is None:
        raise PlanError(("methods",), f"{method} does not take the dpo objective (LoRA, DoRA, QLoRA, full and freeze "
                                      "do)")
    try:
        check_against(method, setup.options, arch, request.seq_len)
    except MethodError as exc:
        raise PlanError(("method_config", method, exc.field), exc.message) from exc
    return as_the_job_runs(setup)  # an optimiser its job cannot take: estimated with the job's (the row says so)


def resolve_gpus(request: PlanRequest, catalog: Catalog) -> list[GpuSpec]:
    if request.gpus is None:
        return catalog.gpus()
    found = []
    for index, name in enumerate(request.gpus):
        gpu = catalog.gpu(name)
        if gpu is None:
            known = ", ".join(g.name for g in catalog.gpus())
            raise PlanError(("gpus", index), f"unknown GPU {name!r} (known: {known})")
        found.append(gpu)
    return found


def dataset_file_tokens(path: Path, bytes_per_token: float) -> int:
    """Text bytes of a normalised JSONL dataset (every string value), divided by bytes per token.

    A rough figure for a caller with no model to count with; plans count every row with the
    model's tokenizer in its prompt format (app.datasets.token_lengths), or say they estimated."""
    total = 0

    def walk(value: Any) -> int:
        if isinstance(value, str):
            return len(value.encode("utf-8"))
        if isinstance(value, dict):
            return sum(walk(v) for v in value.values())
        if isinstance(value, list):
            return sum(walk(v) for v in value)
        return 0

    with path.open(encoding="utf-8") as rows:
        for line in rows:
            if line.strip():
                total += walk(json.loads(line)) + 2  # + BOS/EOS
    return max(1, int(total / bytes_per_token))


def bytes_per_token(arch: Architecture) -> float:
    """Byte-level vocabularies (the demo model's 259 ids) spend one token per byte."""
    return 1.0 if arch.vocab_size <= 512 else BYTES_PER_BPE_TOKEN


def plan(request: PlanRequest, catalog: Catalog, dataset_tokens: TokenSource) -> dict[str, Any]:
    """Instant estimates for every requested method (traced ones come from the planning queue).

    `dataset_tokens(id, arch)` finds a stored dataset the caller may see: its file (the rows are then
    counted with the model's tokenizer and planned as the trainer batches them), or a token count."""
    arch = resolve_architecture(request, catalog)
    if (too_long := check_seq_len(arch, request.seq_len)) is not None:
        raise PlanError(("seq_len",), too_long)
    setups = [build_setup(request, method, arch) for method in request.methods]
    gpus = resolve_gpus(request, catalog)
    runtime = catalog.runtime
    if request.dataset is not None:
        found = dataset_tokens(request.dataset, arch)
        if found is None:
            raise PlanError(("dataset",), f"no dataset {request.dataset!r}")
        if isinstance(found, Path):
            return _plan_on_rows(request, arch, setups, gpus, runtime, found)
        estimates = [instant_estimate(arch, setup, gpus, runtime, RunLength(found, request.epochs)) for setup in setups]
        for estimate in estimates:
            estimate["notes"].append(f"dataset {request.dataset}: {found:,} tokens")
        return {"model": request.model, "estimates": estimates, "badges": badges(estimates), "dataset_tokens": found}
    run = RunLength(dataset_tokens=request.dataset_tokens, epochs=request.epochs)
    estimates = [instant_estimate(arch, setup, gpus, runtime, run) for setup in setups]
    return {"model": request.model, "estimates": estimates, "badges": badges(estimates),
            "dataset_tokens": request.dataset_tokens}


def _plan_on_rows(request: PlanRequest, arch: Architecture, setups: list[TrainingSetup], gpus: list[GpuSpec],
                  runtime: Runtime, path: Path) -> dict[str, Any]:
    """Every method at the trainer's widest micro-batch of this dataset, timed over its real batches."""
    from app.datasets.token_lengths import PLAN_WAIT_SECONDS, dataset_lengths
    from app.planner.real_data import NoTrainableRows, real_data_estimate, shape_and_summary

    lengths = dataset_lengths(path, request.model, None, bytes_per_token(arch), wait=PLAN_WAIT_SECONDS)
    if not lengths.rows:
        raise PlanError(("dataset",), f"dataset {request.dataset} has no rows")
    try:  # every method shares seq_len, micro-batch and accumulation: the same batches
        data, summary = shape_and_summary(lengths.rows, setups[0], epochs=request.epochs)
    except NoTrainableRows as exc:
        raise PlanError(("seq_len",), str(exc)) from exc
    note = f"dataset {request.dataset}: {lengths.tokens:,} tokens in {len(lengths.rows):,} rows, {lengths.how}"
    estimates = []
    for setup in setups:
        estimate = real_data_estimate(arch, setup, data, gpus, runtime)
        estimate["notes"].insert(0, note)
        estimates.append(estimate)
    summary.update(counted=lengths.counted, how=lengths.how, prompt_format=lengths.prompt_format,
                   tokens=lengths.tokens, dataset=request.dataset)
    for estimate in estimates:  # what the plan page's length histogram reads (templates/partials/length_histogram.html)
        estimate["dataset_lengths"] = summary
    return {"model": request.model, "estimates": estimates, "badges": badges(estimates),
            "dataset_tokens": data.real_tokens, "dataset_lengths": summary}


def catalog_listing(catalog: FileCatalog | DbCatalog) -> dict[str, Any]:
    models = []
    for entry in catalog.models():
        arch = catalog.architecture(entry.id)
        models.append({"id": entry.id, "name": entry.name, "source": entry.source, "model_type": arch.model_type,
                       "hidden_size": arch.hidden_size, "num_layers": arch.num_layers, "num_heads": arch.num_heads,
                       "num_kv_heads": arch.num_kv_heads, "vocab_size": arch.vocab_size,
                       "tie_embeddings": arch.tie_embeddings, "max_positions": arch.max_positions,
                       "linear_modules": list(arch.linear_modules())})
    gpus = [{"id": g.id, **g.model_dump()} for g in catalog.gpus()]
    return {"models": models, "gpus": gpus, "runtime": catalog.runtime.model_dump(),
            "as_of": {"models": catalog.models_as_of, "gpus": catalog.gpus_as_of}}
