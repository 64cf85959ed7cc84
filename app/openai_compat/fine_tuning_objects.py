"""OpenAI's fine-tuning shapes and ours: a job request becomes a job body; a job, its events and checkpoints
become `fine_tuning.job`, `fine_tuning.job.event` and `fine_tuning.job.checkpoint` objects.

Why a mapping and not a second kind of job: these are our jobs. A job created through `/v1` is a row
like any other (it shows in `/api/v1/jobs` and the pages), and every job a caller may see is listed
under `/v1`. OpenAI's hyperparameters map onto ours (`n_epochs` -> epochs, `batch_size`,
`learning_rate_multiplier` x the method's default learning rate, `seed`); "auto" keeps our default.
The method is LoRA unless the body's extra `tunedeck` object names another (and its options and any
of our hyperparameters): `extra_body={"tunedeck": {"method": "qlora", "method_config": {"r": 16}}}`.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.methods import DEFAULT_METHOD, get_spec
from app.models import Job, JobEvent, JobStatus

Auto = Literal["auto"]
ORGANIZATION = "org-tunedeck"
STATUS = {JobStatus.QUEUED: "queued", JobStatus.RUNNING: "running", JobStatus.SUCCEEDED: "succeeded",
          JobStatus.FAILED: "failed", JobStatus.CANCELLED: "cancelled",
          # What the caller asked for is what it reads back, as OpenAI answers a cancel: the stop takes seconds.
          JobStatus.CANCELLING: "cancelled", JobStatus.PAUSING: "paused", JobStatus.PAUSED: "paused"}
# Our names -> OpenAI's, for the parameter an error names.
PARAMS = {("dataset",): "training_file", ("validation_dataset",): "validation_file", ("model",): "model",
          ("hyperparameters", "epochs"): "hyperparameters.n_epochs",
          ("hyperparameters", "batch_size"): "hyperparameters.batch_size",
          ("hyperparameters", "learning_rate"): "hyperparameters.learning_rate_multiplier",
          ("hyperparameters", "seed"): "seed", ("name",): "suffix",
          ("hyperparameters", "dpo_beta"): "hyperparameters.beta", ("hyperparameters", "objective"): "method.type"}


class FtHyperparameters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n_epochs: Auto | int | None = Field(None, description="Passes over the training file")
    batch_size: Auto | int | None = None
    learning_rate_multiplier: Auto | float | None = None
    beta: Auto | float | None = None  # DPO

    @field_validator("n_epochs", "batch_size")
    @classmethod
    def _positive(cls, value: Any) -> Any:
        if isinstance(value, int) and not 1 <= value <= 1024:
            raise ValueError("must be between 1 and 1024")
        return value

    @field_validator("learning_rate_multiplier", "beta")
    @classmethod
    def _positive_float(cls, value: Any) -> Any:
        if isinstance(value, float) and not 0 < value <= 100:
            raise ValueError("must be above 0 and at most 100")
        return value


class FtMethodBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    hyperparameters: FtHyperparameters | None = None


class FtMethod(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["supervised", "dpo", "reinforcement"]
    supervised: FtMethodBody | None = None
    dpo: FtMethodBody | None = None
    reinforcement: dict[str, Any] | None = None


class TunedeckExtras(BaseModel):
    """Ours, beside OpenAI's fields: any method, its options, any of our hyperparameters."""

    model_config = ConfigDict(extra="forbid")

    method: str = DEFAULT_METHOD
    method_config: dict[str, Any] = {}
    hyperparameters: dict[str, Any] = {}


class FineTuningJobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=200)
    training_file: str = Field(min_length=1, max_length=64)
    validation_file: str | None = Field(None, max_length=64)
    suffix: str | None = Field(None, max_length=64)
    seed: int | None = Field(None, ge=0, le=2**31 - 1)
    metadata: dict[str, str] | None = None
    hyperparameters: FtHyperparameters | None = None
    method: FtMethod | None = None
    integrations: list[Any] | None = None
    tunedeck: TunedeckExtras = Field(default_factory=TunedeckExtras)

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is not None and (len(value) > 16 or any(len(k) > 64 or len(v) > 512 for k, v in value.items())):
            raise ValueError("at most 16 keys, keys up to 64 characters and values up to 512")
        return value

    @field_validator("integrations")
    @classmethod
    def _no_integrations(cls, value: list[Any] | None) -> list[Any] | None:
        if value:
            raise ValueError("integrations (Weights & Biases) are not supported here")
        return value

    def openai_hyperparameters(self) -> tuple[str, FtHyperparameters]:
        """(type, hyperparameters) from `method`, or the legacy top-level `hyperparameters` (not both)."""
        if self.method is not None and self.hyperparameters is not None:
            raise ValueError("hyperparameters: give them in method.<type>.hyperparameters, not at the top level too")
        if self.method is None:
            return "supervised", self.hyperparameters or FtHyperparameters()
        body = getattr(self.method, self.method.type, None)
        if not isinstance(body, FtMethodBody) or body.hyperparameters is None:  # reinforcement: refused by the caller
            return self.method.type, FtHyperparameters()
        return self.method.type, body.hyperparameters


def job_body(request: FineTuningJobCreate) -> dict[str, Any]:
    """The `/api/v1/jobs` body this request stands for (validated by the caller with `JobCreate`)."""
    kind, ft = request.openai_hyperparameters()
    extras = request.tunedeck
    hp = dict(extras.hyperparameters)
    if isinstance(ft.n_epochs, int):
        hp["epochs"] = ft.n_epochs
    if isinstance(ft.batch_size, int):
        hp["batch_size"] = ft.batch_size
    if isinstance(ft.learning_rate_multiplier, (int, float)) and not isinstance(ft.learning_rate_multiplier, bool):
        hp["learning_rate"] = ft.learning_rate_multiplier * get_spec(extras.method).learning_rate
    if request.seed is not None:
        hp["seed"] = request.seed
    if kind == "dpo":
        hp["objective"] = "dpo"
        if isinstance(ft.beta, (int, float)) and not isinstance(ft.beta, bool):
            hp["dpo_beta"] = ft.beta
    elif isinstance(ft.beta, (int, float)) and not isinstance(ft.beta, bool):
        hp["dpo_beta"] = ft.beta  # refused by the job's own check: beta is DPO's
    if request.validation_file and "eval_every" not in hp:
        hp["eval_every"] = hp.get("checkpoint_every") or 50  # valid_loss at each checkpoint, as OpenAI's
    body: dict[str, Any] = {"name": request.suffix or "", "model": request.model, "dataset": request.training_file,
                            "method": extras.method, "method_config": extras.method_config, "hyperparameters": hp}
    if request.validation_file:
        body["validation_dataset"] = request.validation_file
    return body


def param_for(loc: tuple[Any, ...]) -> str:
    """The OpenAI parameter an error at our location `loc` is about (ours under `tunedeck.` otherwise)."""
    loc = tuple(str(p) for p in loc)
    if loc in PARAMS:
        return PARAMS[loc]
    if loc and loc[0] in ("hyperparameters", "method_config", "method"):
        return ".".join(("tunedeck", *loc))
    return ".".join(loc) or "body"


def _epoch(moment: datetime | None) -> int | None:
    return int(moment.timestamp()) if moment is not None else None


def job_object(job: Job) -> dict[str, Any]:
    """A `fine_tuning.job`, with every field the SDK declares, and ours under `tunedeck`."""
    config, extras = job.config or {}, job.api_extras or {}
    hp = config.get("hyperparameters") or {}
    default_lr = get_spec(job.method).learning_rate
    hyperparameters = {"n_epochs": hp.get("epochs") if hp.get("epochs") is not None else "auto",
                       "batch_size": hp.get("batch_size", "auto"),
                       "learning_rate_multiplier": round(float(hp.get("learning_rate", default_lr)) / default_lr, 6)}
    kind = "dpo" if hp.get("objective") == "dpo" else "supervised"
    if kind == "dpo":
        hyperparameters["beta"] = hp.get("dpo_beta", 0.1)
    status = STATUS.get(JobStatus(job.status), job.status)
    estimated = None
    if job.status == JobStatus.RUNNING and job.started_at and job.step and job.total_steps:
        elapsed = (datetime.now(job.started_at.tzinfo) - job.started_at).total_seconds()
        estimated = int(job.started_at.timestamp() + elapsed * job.total_steps / job.step)
    return {
        "id": job.id, "object": "fine_tuning.job", "created_at": _epoch(job.created_at),
        "error": ({"code": "training_failed", "message": job.error or "the job failed", "param": None}
                  if job.status == JobStatus.FAILED else None),
        "fine_tuned_model": f"ft:{job.model}:{job.id}" if job.status == JobStatus.SUCCEEDED else None,
        "finished_at": _epoch(job.finished_at) if job.status in (JobStatus.SUCCEEDED, JobStatus.FAILED,
                                                                 JobStatus.CANCELLED) else None,
        "hyperparameters": hyperparameters, "model": job.model, "organization_id": ORGANIZATION,
        "result_files": [], "seed": int(hp.get("seed", 42)), "status": status,
        "trained_tokens": (job.summary or {}).get("trained_tokens"), "training_file": job.dataset_id,
        "validation_file": config.get("validation_dataset"), "estimated_finish": estimated,
        "integrations": [], "metadata": extras.get("metadata"), "user_provided_suffix": extras.get("suffix"),
        "method": {"type": kind, kind: {"hyperparameters": hyperparameters}},
        "tunedeck": {"method": job.method, "method_config": config.get("method_config") or {},
                     "status": job.status, "step": job.step, "total_steps": job.total_steps, "plan": job.plan,
                     "job": f"/api/v1/jobs/{job.id}"},
    }


def event_object(job: Job, event: JobEvent) -> dict[str, Any]:
    """One of our events as OpenAI's: a `metrics` event per metric point, a `message` for the rest."""
    data, kind = event.data or {}, event.kind
    level, kind_out, payload = "info", "message", None
    if kind == "metric":
        kind_out = "metrics"
        step = data.get("step")
        payload = {"step": step, "total_steps": job.total_steps, "train_loss": data.get("loss"),
                   **({"valid_loss": data["eval_loss"]} if data.get("eval_loss") is not None else {}),
                   **{k: v for k, v in data.items() if k not in ("step", "loss", "eval_loss")}}
        message = f"Step {step}/{job.total_steps}: training loss={data.get('loss', float('nan')):.4f}" + (
            f", validation loss={data['eval_loss']:.4f}" if data.get("eval_loss") is not None else "")
    elif kind == "status":
        status = data.get("status", "")
        message = f"Job status: {status}" + (f": {data['error']}" if data.get("error") else "")
        level = "error" if status == JobStatus.FAILED else "info"
    else:
        message = str(data.get("message", ""))
        level = "warn" if data.get("level") == "warning" else "error" if data.get("level") == "error" else "info"
    return {"id": f"ftevent-{job.id}-{event.seq}", "object": "fine_tuning.job.event",
            "created_at": _epoch(event.created_at), "level": level, "message": message, "type": kind_out,
            "data": payload}


def checkpoint_object(job: Job, step: int, created_at: int, train_loss: float | None,
                      valid_loss: float | None) -> dict[str, Any]:
    return {"id": f"ftckpt-{job.id}-{step}", "object": "fine_tuning.job.checkpoint", "created_at": created_at,
            "fine_tuned_model_checkpoint": f"ft:{job.model}:{job.id}:ckpt-{step}", "fine_tuning_job_id": job.id,
            "step_number": step, "metrics": {"step": float(step), "train_loss": train_loss, "valid_loss": valid_loss,
                                             "full_valid_loss": valid_loss}}
