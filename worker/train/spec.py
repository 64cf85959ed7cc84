"""The job spec the worker hands to the training subprocess, as a JSON file.

The API has already validated the user's config strictly; the trainer parses
it with the same models (so the same defaults), ignoring top-level fields it
does not need (names, notes, plan ids). Paths are absolute and resolved by
the worker from database ids, never typed by users.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, SerializeAsAny, model_validator

from app.methods import MethodOptions, parse_options
from app.schemas.hyperparameters import Hyperparameters, hyperparameters_for


class JobConfig(BaseModel):
    """The job's config as the API stored it, parsed with the API's own models.

    Why the same models: the hyperparameters and the method's options get their
    defaults and bounds in one place (`app.schemas.hyperparameters`,
    `app.methods`), so the trainer runs exactly what the user was shown; a
    sparse spec (a test, an older row) gets the same defaults the API would give.
    """

    model_config = ConfigDict(extra="ignore")

    model: str
    dataset: str
    method: str
    hyperparameters: SerializeAsAny[Hyperparameters]
    method_config: SerializeAsAny[MethodOptions]  # the method's own options model

    @model_validator(mode="before")
    @classmethod
    def _method_models(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not isinstance(data.get("method"), str):
            return data
        method, hyperparameters = data["method"], data.get("hyperparameters") or {}
        if isinstance(hyperparameters, dict) and (hyperparameters.get("max_steps") is None) == (
                hyperparameters.get("epochs") is None):
            # The API always stores the run length it resolved: a spec without exactly one is not the API's.
            raise ValueError("exactly one of max_steps and epochs must be set")
        return {**data, "hyperparameters": hyperparameters_for(method).model_validate(hyperparameters),
                "method_config": parse_options(method, data.get("method_config"))}


class TrainSpec(BaseModel):
    model_config = ConfigDict(extra="ignore")

    job_id: str
    model_path: str
    dataset_path: Path
    validation_path: Path | None = None  # the rows to evaluate on, when the job has a validation dataset
    output_dir: Path
    # Where the merged model goes for methods that have one (LoRA, DoRA, QLoRA); none if unset.
    merged_dir: Path | None = None
    # `<job dir>/checkpoints` (app.jobs.checkpoints); defaults to output_dir's sibling.
    checkpoint_dir: Path | None = None
    # Continue from the newest complete checkpoint when there is one; else start afresh
    # (and drop any checkpoints an earlier run left, so they cannot be mistaken for this run's).
    resume: bool = False
    # The newest checkpoint step the job's stored history records (`worker.runner`); a newer
    # one on disk has steps the history lacks, so the resume prefers the recorded one.
    resume_through: int | None = None
    config: JobConfig

    @property
    def checkpoints(self) -> Path:
        return self.checkpoint_dir if self.checkpoint_dir is not None else self.output_dir.parent / "checkpoints"


def load_spec(path: Path) -> TrainSpec:
    """Read and validate a spec file; a pydantic error names the bad field."""
    return TrainSpec.model_validate_json(path.read_text(encoding="utf-8"))
